#!/usr/bin/env bash
# The issue #12 stall check: wrk -t1 -c8 on an empty ledger, /healthz 5 s and 10 s, segment budgets
# over 10,000 segments 10 s, then /healthz 10 s right after under `perf sched record` (root).
# Usage: Benchmarks/stall-check.sh REFRESHD LABEL   (then: perf sched latency -i /tmp/stall-LABEL/sched.data --sort max)

set -u
B=$1; L=$2; S=/tmp/stall-$L; rm -rf $S; mkdir -p $S/spool
printf 'state_dir = "%s"\nspool_dir = "%s/spool"\nsocket = "%s/r.sock"\nlisten = "127.0.0.1:28600"\nlog_level = "warning"\n' $S $S $S > $S/c.toml
cat > $S/budget.lua <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("/v1/segments/00000000-0000-4000-8000-%012d/budget?time_zone=UTC", counter % 10000))
end
LUA
$B run --config $S/c.toml 2> $S/log & echo $! > $S/pid
sleep 3; curl -s http://127.0.0.1:28600/healthz; echo
P=$(cat $S/pid)
wrk -t1 -c8 -d5s --latency http://127.0.0.1:28600/healthz | grep -E "Req/|99%|Max|Latency"
wrk -t1 -c8 -d10s --latency http://127.0.0.1:28600/healthz | grep -E "Req/|99%|Latency"
wrk -t1 -c8 -d10s --latency -s $S/budget.lua http://127.0.0.1:28600/ | grep -E "Req/|99%|Latency"
perf sched record -o $S/sched.data -- sleep 10 > /dev/null 2>&1 & PP=$!
wrk -t1 -c8 -d10s --latency http://127.0.0.1:28600/healthz | grep -E "Req/|99%|Latency"
wait $PP; sleep 1
kill $P; wait $P
echo "pid $P"
