#!/usr/bin/env bash
# Where the open-loop tail comes from: a fresh `inlet serve`, single events over 64
# connections at RATE requests/s for SECONDS (defaults: 14000, 20; use half the durable floor
# of an `inlet-bench all` run), then each server thread's share of a core (on CPU, waiting
# for one), the writer's commit histograms from /metrics (commit time, events per commit) and
# what the server wrote per commit (/proc/PID/io).
# With FILL=N, N bulk events are stored first and the indexer is let catch up (its lag at 0)
# before the timed run.
#
#   bench/open-loop.sh [RATE] [SECONDS]
#
# OL_BIN: the directory of the `inlet` and `inlet-bench` to run (default target/release).
# Needs curl; uses 127.0.0.1:$OL_PORT (18096) and a data dir under $OL_DIR (/tmp), deleted
# afterwards.
set -euo pipefail
rate=${1:-14000} secs=${2:-20}
bin=${OL_BIN:-$(dirname "$0")/../target/release}
addr=127.0.0.1:${OL_PORT:-18096}
dir=$(mktemp -d "${OL_DIR:-/tmp}/inlet-ol.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir" "$dir.log"; }
trap cleanup EXIT
. "$(dirname "$0")/serve.sh"
serve "$bin/inlet" "$dir" "$addr"
key=$("$bin/inlet" keys mint --data "$dir" --app default --label open-loop)
metric() { curl -sf "http://$addr/metrics" | grep -E "^$1" || true; }
if [ "${FILL:-0}" -gt 0 ]; then
  "$bin/inlet-bench" load --addr "$addr" --key "$key" --bulk 1000 --conns 16 \
    --requests $((FILL / 1000)) > /dev/null
  deadline=$((SECONDS + 600))
  until metric inlet_identity_lag_events | grep -q ' 0$'; do
    [ $SECONDS -lt $deadline ] || { echo "the indexer did not catch up" >&2; exit 1; }
    sleep 0.5
  done
fi
threads() {
  for t in /proc/"$pid"/task/*; do echo "$(tr ' ' _ < "$t"/comm) $(cat "$t"/schedstat)"; done |
    awk '{a[$1]+=$2; b[$1]+=$3} END {for (k in a) print k, a[k], b[k]}' | sort
}
io() { awk '/^(write_bytes|syscw)/ {print "io_" $1, $2}' /proc/"$pid"/io; }
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
before=$(metric 'inlet_commit_(duration_seconds|batch_events)_(sum|count)'; io) t0=$(threads) b0=$(busy)
# Seed 2: ids of their own, not the fill's (seed 1), which would all be duplicates.
"$bin/inlet-bench" load --addr "$addr" --key "$key" --bulk 1 --conns 64 --rate "$rate" \
  --seconds "$secs" --seed 2 2>&1 | tail -1
after=$(metric 'inlet_commit_(duration_seconds|batch_events)_(sum|count)'; io) t1=$(threads) b1=$(busy)
echo "load average $(cut -d' ' -f1 /proc/loadavg); the machine's cores busy $(echo "$b0 $b1" |
  awk '{printf "%.0f%%", ($3 - $1) * 100 / ($4 - $2)}') (server, load generator and the rest)"
join <(echo "$t0") <(echo "$t1") | awk -v w="$secs" \
  '($4-$2)/w/1e7 >= 0.5 {printf "  %-18s on cpu %5.1f%%  waiting for cpu %5.1f%%\n", $1, ($4-$2)/w/1e7, ($5-$3)/w/1e7}'
join <(echo "$before" | sort) <(echo "$after" | sort) | awk -v w="$secs" '
  {d[$1] = $3 - $2}
  END {
    n = d["inlet_commit_duration_seconds_count"]
    if (n > 0) printf "  commits %d: %.1f events each, %.2f ms each, the writer in commits %.0f%% of the time\n",
      n, d["inlet_commit_batch_events_sum"] / n, d["inlet_commit_duration_seconds_sum"] * 1000 / n,
      d["inlet_commit_duration_seconds_sum"] * 100 / w
    if (n > 0) printf "  per commit: %.1f KiB written to files, %.1f write calls (sockets too)\n",
      d["io_write_bytes:"] / 1024 / n, d["io_syscw:"] / n
  }'
