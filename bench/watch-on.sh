#!/usr/bin/env bash
# A stand-in for the inlet binary in `bench/ab.sh` that serves with the watch features busy:
# one live tail open without a filter (every record built and sent) and alert rules of each
# kind evaluated every second. `bench/ab.sh target/release/inlet bench/watch-on.sh` compares
# the two. Other commands go straight to the binary ($INLET_BIN, default target/release/inlet).
set -euo pipefail
bin=${INLET_BIN:-$(dirname "$0")/../target/release/inlet}
[ "${1:-}" = serve ] || exec "$bin" "$@"
data= listen=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in --data) data=${args[i + 1]} ;; --listen) listen=${args[i + 1]} ;; esac
done
(
  until curl -sf "http://$listen/readyz" > /dev/null; do sleep 0.1; done
  echo "bench password" | "$bin" admin set-password --data "$data" > /dev/null
  jar=$(mktemp)
  curl -sf -c "$jar" -H 'Content-Type: application/json' -d '{"password":"bench password"}' \
    "http://$listen/admin/api/login" > /dev/null
  "$bin" alerts add --data "$data" --app default --silent-for 10m > /dev/null
  "$bin" alerts add --data "$data" --app default --rejected-above 50 > /dev/null
  "$bin" alerts add --data "$data" --app default --quota-above 90 > /dev/null
  exec curl -sN -b "$jar" "http://$listen/admin/api/tail" > /dev/null
) &
INLET_ALERT_INTERVAL_MS=1000 exec "$bin" "$@"
