#!/usr/bin/env bash
# A long backfill and a profile read right after it: bulk 1000 x 16 from empty to EVENTS
# (default 10M) in steps of 2M, printing per step the events/s, the identity indexer's lag
# and the server's peak RSS so far; then `inlet profile` timed, with the server's peak RSS
# after it. The lag stays under identity::indexer::MAX_LAG while the writer waits for the
# indexer; a profile read reads the whole lag from the log, so its time and memory follow it.
#
#   bench/backfill.sh [EVENTS] [BIN]
#
# BIN: the inlet binary (default target/release/inlet). Needs curl; uses
# 127.0.0.1:$BACKFILL_PORT (18095) and a data dir under $BACKFILL_DIR (/tmp), deleted after.
set -euo pipefail
events=${1:-10000000}
root=$(dirname "$0")/..
inlet=${2:-$root/target/release/inlet} bench=$root/target/release/inlet-bench
. "$root/bench/serve.sh"
scratch "$inlet" backfill "${BACKFILL_PORT:-18095}" "${BACKFILL_DIR:-/tmp}"
metric() { curl -sf "http://$addr/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
peak() { awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' /proc/"$pid"/status; }
steps=$(((events + 1999999) / 2000000))
for step in $(seq "$steps"); do
  line=$("$bench" load --addr "$addr" --key "$key" --bulk 1000 --conns 16 --requests 2000 \
    --seed "$step" 2>&1 | tail -1)
  echo "$((step * 2))M stored: $(grep -o '[0-9]* events/s' <<< "$line"), identity lag" \
    "$(metric inlet_identity_lag_events), peak RSS $(peak)"
done
echo "writer held for the indexer: $(metric inlet_identity_paced_seconds_total) s"
started=$(date +%s.%N)
"$inlet" --data "$dir" profile default u77 --limit 5 > /dev/null
echo "inlet profile: $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}') s;" \
  "server peak RSS after it $(peak)"
