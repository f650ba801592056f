#!/usr/bin/env bash
# The control API's read speed beside the framework's ceiling, measured from outside (see
# Benchmarks/README.md, "Control API against its ceiling"). For each ledger (empty; the 1M-attempt
# file) and each listener (the unix socket; 127.0.0.1), in one run of one release refreshd:
#   /healthz (the trivial route), segment budgets over 10,000 segments, /healthz again right after,
#   then the budgets again after 20 s of sustained load; plus wrk on the TCP listener.
# Usage: Benchmarks/api-bench.sh [REFRESHD] [SECONDS]   (default .build/release/refreshd, 10)
# REFRESHD_GLOBAL_EXECUTOR=swift in the environment: the same with handlers on Swift's pool.
set -euo pipefail
cd "$(dirname "$0")/.."
refreshd=$(realpath "${1:-.build/release/refreshd}")
seconds=${2:-10}
work=$(mktemp -d /tmp/refreshd-api-bench.XXXXXX)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
cc -O2 -o "$work/api-load" Benchmarks/api-load.c
port=$((20000 + RANDOM % 20000))

start() {  # $1: state dir, $2: number of accounts (0: one "default")
    local state=$1 accounts=$2
    mkdir -p "$state/spool"
    {
        echo "state_dir = \"$state\""
        echo "spool_dir = \"$state/spool\""
        echo "socket = \"$state/r.sock\""
        echo "listen = \"127.0.0.1:$port\""
        echo "log_level = \"warning\""
        if [ "$accounts" -gt 0 ]; then
            for i in $(seq 0 $((accounts - 1))); do printf '[[account]]\nname = "acct-%d"\n' "$i"; done
        fi
    } > "$state/refreshd.toml"
    "$refreshd" run --config "$state/refreshd.toml" 2> "$state/log" &
    echo $! > "$work/pid"
    for _ in $(seq 100); do [ -S "$state/r.sock" ] && curl -sf --unix-socket "$state/r.sock" http://x/healthz > /dev/null && return; sleep 0.1; done
    echo "refreshd did not start:"; cat "$state/log"; exit 1
}

stop() { kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" || true; }

load() {  # $1 target, $2 path, $3 seconds, $4 accounts
    ACCOUNTS=$4 "$work/api-load" "$1" 8 "$3" "$2"
}

measure() {  # $1 label, $2 state, $3 accounts
    local state=$2 accounts=$3 budget
    if [ "$accounts" -gt 0 ]; then budget='/v1/segments/{seg}/budget?account={acct}&time_zone=UTC'
    else budget='/v1/segments/{seg}/budget?time_zone=UTC'; fi
    for target in "unix:$state/r.sock" "127.0.0.1:$port"; do
        echo "# $1, $target"
        load "$target" /healthz "$seconds" "$accounts"
        load "$target" "$budget" "$seconds" "$accounts"
        load "$target" /healthz "$seconds" "$accounts"
        load "$target" "$budget" 20 "$accounts" > /dev/null
        load "$target" "$budget" "$seconds" "$accounts"
    done
    if command -v wrk > /dev/null; then
        cat > "$work/budget.lua" <<EOF
counter = 0
request = function()
  counter = counter + 1
  local seg = counter % 10000
  local path = string.format("/v1/segments/00000000-0000-4000-8000-%012d/budget?time_zone=UTC", seg)
  if $accounts > 0 then path = path .. string.format("&account=acct-%d", seg % $accounts) end
  return wrk.format("GET", path)
end
EOF
        echo "# $1, wrk -t1 -c8 on 127.0.0.1:$port"
        wrk -t1 -c8 -d"${seconds}s" --latency "http://127.0.0.1:$port/healthz" | grep -E "Requests/sec|  99%|  50%"
        wrk -t1 -c8 -d"${seconds}s" --latency -s "$work/budget.lua" "http://127.0.0.1:$port/" | grep -E "Requests/sec|  99%|  50%"
    fi
}

echo "refreshd: $refreshd ($("$refreshd" version | head -1)); $(nproc) cores; $(date -u +%FT%TZ)"
start "$work/empty" 0
measure "empty ledger" "$work/empty" 0
stop

mkdir -p "$work/big"
start "$work/big" 1000
stop
python3 Benchmarks/make-bench-ledger.py "$work/big/ledger.sqlite"
start "$work/big" 1000
measure "1M-attempt ledger, 1,000 accounts" "$work/big" 1000
stop
