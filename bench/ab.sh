#!/usr/bin/env bash
# Same-minute A/B of inlet builds under bulk load, with the CPU of each server thread.
#
#   bench/ab.sh [-r ROUNDS] [-f FILL_SECONDS | -n FILL_REQUESTS] [-s SECONDS] [-m SHAPE] BIN... [-- LOAD_ARGS...]
#
# For each round and each build (alternating, so that a noisy machine hits all of them, and
# each round starting with the next build, as the first run after a pause is favoured):
# a fresh data dir, `BIN serve`, a key, FILL_SECONDS (or FILL_REQUESTS, for a log of an exact
# size: `-n 12700` leaves the dedupe index's first 12.6M-key merge due) of bulk 1000 x 16
# from empty, a wait until the identity indexer has caught up on it, then SECONDS measured
# in SHAPE (default `--bulk 1000 --conns 16`; `-m "--bulk 1 --conns 64"` measures single
# events) with LOAD_ARGS added (e.g. `--dup-share 0.5 --dup-count 1000000 --dup-seed 1` to
# resubmit half of the ids from the first million filled). Prints the load
# generator's line, each thread group's share of a core on CPU and runnable but waiting
# for one (/proc/<pid>/task/*/schedstat), and peak RSS. Needs curl; uses 127.0.0.1:$AB_PORT
# (18093) and $AB_DIR (/tmp). Data dirs are deleted after each run: a 20 s run writes GBs.
set -euo pipefail
rounds=2 fill=(--seconds 8) secs=15 shape="--bulk 1000 --conns 16"
while getopts "r:f:n:s:m:" o; do
  case $o in
    r) rounds=$OPTARG ;; f) fill=(--seconds "$OPTARG") ;; n) fill=(--requests "$OPTARG") ;;
    s) secs=$OPTARG ;; m) shape=$OPTARG ;; *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
bins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#bins[@]} -gt 0 ] || { echo "usage: $0 [-r N] [-f S | -n REQUESTS] [-s S] [-m SHAPE] BIN... [-- LOAD_ARGS...]" >&2; exit 2; }
bench=${INLET_BENCH:-$(dirname "$0")/../target/release/inlet-bench}
. "$(dirname "$0")/serve.sh"
port=${AB_PORT:-18093}
addr=127.0.0.1:$port
pid= dir=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; [ -n "$dir" ] && rm -rf "$dir" "$dir.log"; pid= dir=; }
trap cleanup EXIT

threads() { # comm on-cpu-ns waiting-ns, summed per thread name
  for t in /proc/"$pid"/task/*; do
    echo "$(tr ' ' _ < "$t"/comm) $(cat "$t"/schedstat)"
  done | awk '{a[$1]+=$2; b[$1]+=$3} END {for (k in a) print k, a[k], b[k]}' | sort
}

cpu_ticks() { # user + system clock ticks of the whole server
  awk '{print $14 + $15}' /proc/"$pid"/stat
}

for r in $(seq "$rounds"); do
  # Each round starts with the next build: the first run after a pause is favoured.
  order=("${bins[@]:$(((r - 1) % ${#bins[@]}))}" "${bins[@]:0:$(((r - 1) % ${#bins[@]}))}")
  for bin in "${order[@]}"; do
    dir=$(mktemp -d "${AB_DIR:-/tmp}/inlet-ab.XXXXXX")
    serve "$bin" "$dir" "$addr"
    key=$("$bin" keys mint --data "$dir" --app default --label ab)
    "$bench" load --addr "$addr" --key "$key" --bulk 1000 --conns 16 "${fill[@]}" > /dev/null
    # The indexer catches up on the fill first: its work on earlier events would otherwise
    # count against the measured ones (and more so for a build that measures fewer).
    deadline=$((SECONDS + 300))
    until curl -sf "http://$addr/metrics" | grep -q '^inlet_identity_lag_events 0$'; do
      [ $SECONDS -lt $deadline ] || { echo "$bin: the indexer did not catch up" >&2; exit 1; }
      sleep 0.2
    done
    before=$(threads); t0=$(date +%s.%N); cpu0=$(cpu_ticks)
    # shellcheck disable=SC2086 # SHAPE is a list of arguments
    line=$("$bench" load --addr "$addr" --key "$key" $shape --seconds "$secs" --seed 2 "$@" 2>&1 | tail -1)
    after=$(threads); t1=$(date +%s.%N); cpu1=$(cpu_ticks)
    echo "== round $r: $bin (load average $(cut -d' ' -f1 /proc/loadavg))"
    echo "$line"
    events=$(echo "$line" | sed -n 's/.* \([0-9]*\) events in .*/\1/p')
    [ -n "$events" ] && [ "$events" -gt 0 ] && echo "  server CPU $(echo "scale=2; ($cpu1 - $cpu0) * 1000000 / $(getconf CLK_TCK) / $events" | bc) µs/event (all threads, user + system)"
    join <(echo "$before") <(echo "$after") | awk -v w="$(echo "$t1 - $t0" | bc)" \
      '($4-$2)/w/1e7 >= 0.5 {printf "  %-22s on cpu %5.1f%%  waiting for cpu %5.1f%%\n", $1, ($4-$2)/w/1e7, ($5-$3)/w/1e7}'
    grep VmHWM /proc/"$pid"/status | sed 's/^/  /'
    rm -f "$dir.log"
    cleanup
  done
done
