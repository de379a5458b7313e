#!/usr/bin/env bash
# The peer a studio would otherwise use: PostgreSQL with the same workloads as inlet's bulk
# and single-event runs, at the same number of stored events, no HTTP layer.
#
#   bench/postgres.sh [-n STORED[,STORED...]] [-s SECONDS] [-d DIR] [-w "bulk single"]
#
# A throwaway cluster in a temp dir under DIR (default $TMPDIR or /tmp), unix socket only,
# fsync and synchronous_commit on, every other setting the default. One table: app, a uuid
# event id, received_at and a jsonb payload of about 350 bytes, with a unique (app, event_id)
# index. For each STORED (ascending; default 1000000) it tops the table up to STORED rows
# (random uuids, in transactions of 1M rows), checkpoints, then runs pgbench for SECONDS
# (default 20) per workload:
#   bulk    16 clients, each transaction one INSERT of 1000 rows ... ON CONFLICT DO NOTHING
#   single  64 clients, each transaction one row, ON CONFLICT DO NOTHING
# The payload is built from JSON text in the statement, so the server parses every event's
# JSON as inlet does. Prints one line per run on stdout:
#   RESULT <workload> stored=<rows before> eps=<events/s> tps=<tx/s> lat_ms=<avg> cpu_us=<server CPU per event>
# (server CPU: every postgres process, user + system, over the run). Progress on stderr.
# Without PostgreSQL (initdb, postgres, pg_ctl, psql, pgbench) it prints `SKIP <why>` and
# exits 0. Run as root, the cluster runs as the `postgres` user.
set -euo pipefail
stored_list=1000000 secs=20 base=${TMPDIR:-/tmp} workloads="bulk single"
while getopts "n:s:d:w:" o; do
  case $o in n) stored_list=$OPTARG ;; s) secs=$OPTARG ;; d) base=$OPTARG ;; w) workloads=$OPTARG ;; *) exit 2 ;; esac
done
say() { echo "[postgres.sh] $*" >&2; }

pgbin=
for d in "${PG_BIN:-}" /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
  [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pgbench" ] && { pgbin=$d; break; }
done
if [ -z "$pgbin" ]; then
  for t in initdb postgres pg_ctl psql pgbench; do
    command -v "$t" > /dev/null || { echo "SKIP PostgreSQL not installed ($t not found)"; exit 0; }
  done
  pgbin=$(dirname "$(command -v pgbench)")
fi
as_pg=()
if [ "$(id -u)" = 0 ]; then
  id postgres > /dev/null 2>&1 || { echo "SKIP running as root and no postgres user to run the cluster as"; exit 0; }
  as_pg=(runuser -u postgres --)
fi

dir=$(mktemp -d "$base/inlet-pg.XXXXXX")
chmod 755 "$dir"
[ ${#as_pg[@]} -eq 0 ] || chown postgres "$dir"
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop > /dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${as_pg[@]}" "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 > "$dir/initdb.log" 2>&1 ||
  { cat "$dir/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses='' -k $dir -c fsync=on -c synchronous_commit=on -c max_connections=100" start > /dev/null ||
  { cat "$dir/server.log" >&2; exit 1; }
export PGHOST=$dir PGUSER=postgres PGDATABASE=postgres
psql() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
postmaster=$(head -1 "$dir/data/postmaster.pid")

# One event's payload, about 350 bytes of JSON, from the integer expression $1.
payload() {
  local n=$1
  echo "('{\"event_name\":\"purchase\",\"event_ts_ms\":' || (1764000000000 + ($n) % 86400000) ||
    ',\"install_uuid\":\"' || md5(($n)::text) || '\",\"user_id\":\"u' || (($n) % 100000) ||
    '\",\"revenue\":' || (($n) % 50) || '.99,\"currency\":\"EUR\",\"props\":{\"level\":' || (($n) % 80) ||
    ',\"store\":\"google\"},\"ip\":\"203.0.113.7\",\"ua\":\"Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/126.0 Mobile Safari/537.36\"}')::jsonb"
}
insert() { # ROWS SEED-EXPRESSION
  echo "INSERT INTO events (app, event_id, payload)
    SELECT 'default', gen_random_uuid(), $(payload "$2 + g") FROM generate_series(1, $1) g
    ON CONFLICT DO NOTHING;"
}

psql -c "CREATE TABLE events (app text NOT NULL, event_id uuid NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(), payload jsonb NOT NULL);
  CREATE UNIQUE INDEX events_app_event_id ON events (app, event_id);"
say "cluster in $dir: $("$pgbin/postgres" --version); payload $(psql -tA -c \
  "SELECT pg_column_size($(payload 12345))") bytes as jsonb"
printf '\\set s random(1, 1000000000)\n%s\n' "$(insert 1000 :s)" > "$dir/bulk.sql"
printf '\\set s random(1, 1000000000)\n%s\n' "$(insert 1 :s)" > "$dir/single.sql"

# CPU (clock ticks) of the cluster so far: the postmaster with its reaped children, and the
# children still running (backends end when pgbench disconnects and are then reaped).
cpu_ticks() {
  local t=0 p f
  for p in $postmaster $(pgrep -P "$postmaster"); do
    f=$(cut -d')' -f2- "/proc/$p/stat" 2> /dev/null) || continue
    # shellcheck disable=SC2086 # fields
    set -- $f
    t=$((t + ${12} + ${13}))
    [ "$p" = "$postmaster" ] && t=$((t + ${14} + ${15}))
  done
  echo $t
}
hz=$(getconf CLK_TCK)

have=0
for want in $(tr , ' ' <<< "$stored_list" | xargs -n1 | sort -n); do
  started=$SECONDS
  while [ "$have" -lt "$want" ]; do
    n=$((want - have < 1000000 ? want - have : 1000000))
    psql -c "$(insert "$n" "$have")"
    have=$(psql -tA -c "SELECT count(*) FROM events")
  done
  psql -c "VACUUM ANALYZE events" -c "CHECKPOINT"
  say "stored $have rows (filled in $((SECONDS - started)) s; table + index $(psql -tA -c \
    "SELECT pg_size_pretty(pg_total_relation_size('events'))"))"
  for w in $workloads; do
    case $w in bulk) clients=16 rows=1000 ;; single) clients=64 rows=1 ;; *) say "unknown workload $w"; exit 2 ;; esac
    c0=$(cpu_ticks)
    out=$("$pgbin/pgbench" -n -M prepared -c "$clients" -j 2 -T "$secs" -f "$dir/$w.sql" 2>&1) ||
      { echo "$out" >&2; exit 1; }
    # The backends' CPU counts once the postmaster has reaped them: wait for that.
    for _ in $(seq 100); do pgrep -P "$postmaster" -f 'postgres: postgres' > /dev/null || break; sleep 0.05; done
    c1=$(cpu_ticks)
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<< "$out" | tail -1)
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<< "$out")
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<< "$out")
    awk -v w="$w" -v have="$have" -v tps="$tps" -v rows="$rows" -v lat="$lat" -v tx="$tx" \
      -v c="$((c1 - c0))" -v hz="$hz" 'BEGIN {
        printf "RESULT %s stored=%d eps=%.0f tps=%.1f lat_ms=%s cpu_us=%.1f\n",
          w, have, tps * rows, tps, lat, c / hz * 1e6 / (tx * rows) }'
    have=$(psql -tA -c "SELECT count(*) FROM events")
  done
done
