#!/usr/bin/env bash
# Cost of an erasure: a log of N events (default 1M, bulk 1000 x 16), a profile of a few
# events among them, then `inlet erase` timed while single events arrive open-loop
# (8 conns, RATE requests/s, default 500) and their latency is measured; then the same single
# events without an erasure, for comparison.
#
#   bench/erase.sh [EVENTS] [RATE]
#
# Needs curl; uses 127.0.0.1:$ERASE_PORT (18094) and a data dir under $ERASE_DIR (/tmp),
# deleted afterwards.
set -euo pipefail
events=${1:-1000000} rate=${2:-500}
root=$(dirname "$0")/..
inlet=$root/target/release/inlet bench=$root/target/release/inlet-bench
. "$root/bench/serve.sh"
scratch "$inlet" erase "${ERASE_PORT:-18094}" "${ERASE_DIR:-/tmp}"
"$bench" load --addr "$addr" --key "$key" --bulk 1000 --conns 16 --requests $((events / 1000)) --seed 7
for i in 1 2 3 4 5; do
  curl -sf -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "http://$addr/s2s/event" \
    -d "{\"event_id\":\"subject-$i\",\"event_name\":\"open\",\"event_ts_ms\":1735999999000,\"install_uuid\":\"subject-device-$i\",\"user_id\":\"subject-user\"}" > /dev/null
done
echo "log: $(du -sh "$dir/inlet.redb" | cut -f1)"
"$bench" load --addr "$addr" --key "$key" --bulk 1 --conns 8 --rate "$rate" --seconds 20 --seed 8 > "$dir.during" &
load=$!
sleep 3
start=$(date +%s.%N)
"$inlet" --data "$dir" erase --app default --id user_id=subject-user | grep '"events"'
echo "erase: $(echo "$(date +%s.%N) - $start" | bc) s"
wait "$load"
echo "singles during the erasure: $(cat "$dir.during")"
"$bench" load --addr "$addr" --key "$key" --bulk 1 --conns 8 --rate "$rate" --seconds 20 --seed 9
rm -f "$dir.log" "$dir.during"
