#!/usr/bin/env bash
# Reservations on SQLite and on PostgreSQL, one and three processes on one account: the table in
# Benchmarks/README.md ("The shared ledger"). Builds refreshd-ledger-bench in release, starts a
# throwaway PostgreSQL cluster in a temporary directory (durable: fsync and synchronous_commit on,
# as in production; as the postgres user when run as root) and a SQLite file beside it.
#   Benchmarks/ledger-bench.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-10}"
swift build -c release --static-swift-stdlib -Xlinker -z -Xlinker now --product refreshd-ledger-bench >/dev/null
BENCH=.build/release/refreshd-ledger-bench
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
DIR="$(mktemp -d /tmp/refreshd-ledger-bench.XXXXXX)"
AS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; AS=(runuser -u postgres --); fi
PORT=$(( 20000 + RANDOM % 20000 ))
"${AS[@]}" "$BIN/initdb" -D "$DIR/data" -U bench --auth=trust -E UTF8 >/dev/null
"${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR" start >/dev/null
trap '"${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null; rm -rf "$DIR"' EXIT
for processes in 1 3; do
    db="bench$processes"
    "${AS[@]}" "$BIN/psql" -h "$DIR" -p "$PORT" -U bench -d postgres -qc "CREATE DATABASE $db"
    sqlite="$(mktemp -d)/ledger.sqlite"
    "$BENCH" sqlite "$sqlite" --processes "$processes" --seconds "$SECONDS_EACH"
    "$BENCH" postgresql "postgres://bench@127.0.0.1:$PORT/$db" --processes "$processes" --seconds "$SECONDS_EACH"
    rm -rf "$(dirname "$sqlite")"
done
