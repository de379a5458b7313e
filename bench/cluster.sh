#!/usr/bin/env bash
# Cluster mode on one machine: three inlet nodes against one, on the same 3-node NATS
# JetStream engine (sync_interval: always), same run; then failover time.
#
#   bench/cluster.sh [-r ROUNDS] [-s SECONDS] [-f FAILOVERS]     (-s 0: failover only)
#
# Each round, for each shape (bulk: 100 events per request, 8 connections per load; single:
# 1 event, 32 connections per load) and each topology (`one`: one inlet node; `three`: three
# nodes): a fresh engine (three nats-server on loopback), fresh inlet data dirs copied from
# one template (tenants t1..t3, a key each), and three `inlet-bench load` processes at once
# for SECONDS, one per tenant: against one node all three go to it, against three nodes one
# to each. Prints each topology's summed events/s answered 2xx (the loads' lines show the
# 503s) and the ratio three / one.
#
# Failover: three nodes under no load; FAILOVERS times, the owner of tenant t1's partition
# (the node whose t1 counter moved) is SIGKILLed and single events of t1 are sent through
# the other nodes until one is answered 200: kill → first 2xx. The node is started again
# before the next. Expect the lease's TTL (10 s) plus the partition's replay.
#
# Binaries: $INLET_BIN (target/release/inlet), $INLET_BENCH (target/release/inlet-bench),
# $INLET_NATS_SERVER (nats-server on PATH; .ci/run installs it); build with
# `cargo build --release --bins`. Ports from $CL_PORT (18300) up; dirs under $CL_DIR (/tmp).
set -euo pipefail
rounds=1 secs=10 failovers=3
while getopts "r:s:f:" o; do
  case $o in r) rounds=$OPTARG ;; s) secs=$OPTARG ;; f) failovers=$OPTARG ;; *) exit 2 ;; esac
done
here=$(cd "$(dirname "$0")" && pwd)
inlet=${INLET_BIN:-$here/../target/release/inlet}
bench=${INLET_BENCH:-$here/../target/release/inlet-bench}
nats=${INLET_NATS_SERVER:-nats-server}
for b in "$inlet" "$bench"; do
  [ -x "$b" ] || { echo "$b: not built (cargo build --release --bins)" >&2; exit 1; }
done
"$nats" --version > /dev/null || { echo "no nats-server (see .ci/run)" >&2; exit 1; }
base=${CL_PORT:-18300}
work=$(mktemp -d "${CL_DIR:-/tmp}/inlet-cluster-bench.XXXXXX")
engine_pids=() inlet_pids=() addrs=()
stop_inlets() {
  for p in "${inlet_pids[@]}"; do kill -9 "$p" 2> /dev/null || true; wait "$p" 2> /dev/null || true; done
  inlet_pids=() addrs=()
}
stop_engine() {
  for p in "${engine_pids[@]}"; do kill "$p" 2> /dev/null || true; wait "$p" 2> /dev/null || true; done
  engine_pids=()
}
cleanup() { stop_inlets; stop_engine; rm -rf "$work"; }
trap cleanup EXIT

urls="nats://127.0.0.1:$base,nats://127.0.0.1:$((base + 1)),nats://127.0.0.1:$((base + 2))"
monitors="http://127.0.0.1:$((base + 10)),http://127.0.0.1:$((base + 11)),http://127.0.0.1:$((base + 12))"
routes="nats-route://127.0.0.1:$((base + 20)), nats-route://127.0.0.1:$((base + 21)), nats-route://127.0.0.1:$((base + 22))"

start_engine() { # a fresh 3-node engine; returns once its JetStream meta group has a leader
  rm -rf "$work/engine" && mkdir -p "$work/engine"
  for i in 0 1 2; do
    cat > "$work/engine/e$i.conf" << EOF
server_name: e$i
listen: 127.0.0.1:$((base + i))
http: 127.0.0.1:$((base + 10 + i))
max_payload: 16MB
jetstream { store_dir: "$work/engine/s$i", sync_interval: always }
cluster { name: bench, listen: 127.0.0.1:$((base + 20 + i)), routes: [$routes] }
EOF
    "$nats" -c "$work/engine/e$i.conf" > "$work/engine/e$i.log" 2>&1 &
    engine_pids+=($!)
  done
  local deadline=$((SECONDS + 30))
  for i in 0 1 2; do
    until curl -sf "http://127.0.0.1:$((base + 10 + i))/jsz" | grep -q '"leader": *"e'; do
      [ $SECONDS -lt $deadline ] || { echo "the engine did not form" >&2; exit 1; }
      sleep 0.1
    done
  done
}

# The template: tenants t1..t3 with an app and a key each.
template=$work/template
"$inlet" init --data "$template" > /dev/null 2>&1
keys=()
for t in t1 t2 t3; do
  "$inlet" tenants add "$t" --data "$template" > /dev/null
  "$inlet" apps add "app-$t" --tenant "$t" --data "$template" > /dev/null
  keys+=("$("$inlet" keys mint --app "app-$t" --label bench --data "$template")")
done

start_node() { # NAME: an inlet node on its existing data dir, or a new one: the round's first
  # node brings the template's admin data into the engine, the others take it from there
  local dir=$work/$1
  if [ ! -d "$dir" ]; then
    if [ ${#addrs[@]} -eq 0 ]; then cp -r "$template" "$dir"; else mkdir -p "$dir"; fi
  fi
  "$inlet" serve --data "$dir" --listen 127.0.0.1:0 --cluster-engine "$urls" \
    --cluster-monitor "$monitors" --cluster-node "$1" > "$dir.log" 2>&1 &
  inlet_pids+=($!)
  local deadline=$((SECONDS + 60)) addr=
  until [ -n "$addr" ]; do
    [ $SECONDS -lt $deadline ] || { cat "$dir.log" >&2; exit 1; }
    addr=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$dir.log" | head -n 1)
    [ -n "$addr" ] || sleep 0.1
  done
  addrs+=("$addr")
}

owned() { # the number of partitions the nodes serve between them, or 0 while one serves
  # fewer than its share (the partitions are still moving to a node that joined)
  local n=0 a k
  for a in "${addrs[@]}"; do
    a=$(curl -s "http://$a/readyz" | sed -n 's/.*owns partitions \[\([0-9, ]*\)\].*/\1/p' | tr ',' ' ')
    k=$(echo "$a" | wc -w)
    # Each takes at most ceil(16 / nodes): the least a node serves once they settled.
    [ -n "${any_share:-}" ] || [ "$k" -ge $((16 - (${#addrs[@]} - 1) * ((16 + ${#addrs[@]} - 1) / ${#addrs[@]}))) ] || { echo 0; return; }
    n=$((n + k))
  done
  echo "$n"
}

wait_served() {
  local deadline=$((SECONDS + 90))
  until [ "$(owned)" -eq 16 ]; do
    [ $SECONDS -lt $deadline ] || { echo "partitions not all served" >&2; exit 1; }
    sleep 0.2
  done
}

# Events answered 2xx (accepted or duplicate) per second: a 503 is not throughput.
events_per_sec() {
  sed -n 's/.* in \([0-9.]*\) s: .*accepted \([0-9]*\), duplicate \([0-9]*\),.*/\1 \2 \3/p' |
    awk '{printf "%d\n", ($2 + $3) / $1}'
}

run_loads() { # SHAPE...: three loads at once, one per tenant, to addrs round robin; summed events/s
  local i outs=() pids=() total=0
  for i in 0 1 2; do
    outs+=("$work/load$i")
    # shellcheck disable=SC2068 # the shape is a list of arguments
    "$bench" load --addr "${addrs[$((i % ${#addrs[@]}))]}" --key "${keys[$i]}" $@ \
      --seconds "$secs" --seed $((RANDOM + 1)) > "$work/load$i" 2>&1 &
    pids+=($!)
  done
  for i in 0 1 2; do wait "${pids[$i]}"; done
  for i in 0 1 2; do
    local line
    line=$(tail -n 1 "${outs[$i]}")
    echo "    ${addrs[$((i % ${#addrs[@]}))]} t$((i + 1)): $line" >&2
    total=$((total + $(echo "$line" | events_per_sec)))
  done
  echo "$total"
}

declare -A sum
[ "$secs" = 0 ] && rounds=0 # -s 0: failover only
for r in $(seq "$rounds"); do
  for shape in "--bulk 100 --conns 8" "--bulk 1 --conns 32"; do
    for topo in one three; do
      start_engine
      rm -rf "$work"/n[123]
      if [ $topo = one ]; then start_node n1; else start_node n1; start_node n2; start_node n3; fi
      wait_served
      echo "== round $r, $shape, $topo node(s)" >&2
      eps=$(run_loads "$shape")
      echo "  $topo: $eps events/s"
      sum["$shape/$topo"]=$(( ${sum["$shape/$topo"]:-0} + eps ))
      stop_inlets
      stop_engine
    done
  done
done
for shape in "--bulk 100 --conns 8" "--bulk 1 --conns 32"; do
  [ "$rounds" -gt 0 ] || break
  one=${sum["$shape/one"]} three=${sum["$shape/three"]}
  printf '%-22s one node %8d events/s  three nodes %8d events/s  ratio %.2f\n' \
    "$shape" $((one / rounds)) $((three / rounds)) "$(echo "$three / $one" | bc -l)"
done

# Failover: kill the owner of t1's partition, time the first 200 for t1 through another.
start_engine
rm -rf "$work"/n[123]
start_node n1; start_node n2; start_node n3
wait_served
send_one() { # ADDR: the HTTP status of one fresh event of t1
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer ${keys[0]}" \
    -H 'Content-Type: application/json' "http://$1/s2s/event" \
    -d "{\"event_id\":\"f-$RANDOM-$RANDOM-$RANDOM\",\"event_name\":\"purchase\",\"event_ts_ms\":1735999999000,\"install_uuid\":\"8f2a1c0e94d7423b8b53af7c9e21d630\"}" || true
}
t1_used() { # NODE: t1's counter on node NODE (0..2)
  "$inlet" tenants list --json --data "$work/n$(($1 + 1))" |
    sed -n 's/.*"name":"t1".*"used_this_month":\([0-9]*\).*/\1/p;s/.*"used_this_month":\([0-9]*\).*"name":"t1".*/\1/p' |
    head -n 1
}
times=()
for f in $(seq "$failovers"); do
  deadline=$((SECONDS + 60))
  until [ "$(send_one "${addrs[0]}")" = 200 ]; do
    [ $SECONDS -lt $deadline ] || { echo "t1 not served before the kill" >&2; exit 1; }
    sleep 0.1
  done
  # The owner: the node whose t1 counter moves when t1 sends through another node.
  owner=
  for i in 0 1 2; do
    before=$(t1_used "$i")
    [ "$(send_one "${addrs[$(((i + 1) % 3))]}")" = 200 ] || continue
    [ "$(t1_used "$i")" -gt "$before" ] && owner=$i && break
  done
  [ -n "$owner" ] || { echo "no owner of t1 found" >&2; exit 1; }
  kill -9 "${inlet_pids[$owner]}"; wait "${inlet_pids[$owner]}" 2> /dev/null || true
  t0=$(date +%s.%N)
  i=1
  until [ "$(send_one "${addrs[$(((owner + i) % 3))]}")" = 200 ]; do
    i=$((i % 2 + 1))
    sleep 0.02
  done
  t1=$(date +%s.%N)
  ms=$(echo "($t1 - $t0) * 1000 / 1" | bc)
  times+=("$ms")
  echo "  failover $f: killed n$((owner + 1)), first 200 for t1 after $ms ms"
  # Start it again under its name on its data dir, in its slot.
  dir=$work/n$((owner + 1))
  "$inlet" serve --data "$dir" --listen 127.0.0.1:0 --cluster-engine "$urls" \
    --cluster-monitor "$monitors" --cluster-node "n$((owner + 1))" > "$dir.log" 2>&1 &
  inlet_pids[owner]=$!
  addr=
  until [ -n "$addr" ]; do
    addr=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$dir.log" | tail -n 1)
    [ -n "$addr" ] || sleep 0.1
  done
  addrs[owner]=$addr
  # A node back under its name gets partitions only as the others give some up.
  any_share=yes wait_served
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
printf 'failover (kill -> first 2xx), ms: min %s median %s max %s\n' \
  "$(echo "$sorted" | head -n 1)" "$(echo "$sorted" | sed -n "$(((${#times[@]} + 1) / 2))p")" \
  "$(echo "$sorted" | tail -n 1)"
