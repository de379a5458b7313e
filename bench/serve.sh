# Sourced by the bench scripts: `serve BIN DIR ADDR` starts `BIN serve` on data dir DIR at
# ADDR (its log in DIR.log), sets `pid`, and waits up to 30 s for /readyz; a server that
# exits or never gets ready ends the script with its log.
serve() {
  local bin=$1 dir=$2 addr=$3 deadline=$((SECONDS + 30))
  "$bin" serve --data "$dir" --listen "$addr" > "$dir.log" 2>&1 &
  pid=$!
  until curl -sf "http://$addr/readyz" > /dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "$bin: not ready in 30 s" >&2; cat "$dir.log" >&2; exit 1; }
    kill -0 "$pid" 2> /dev/null || { echo "$bin: exited" >&2; cat "$dir.log" >&2; exit 1; }
    sleep 0.1
  done
}

# `scratch BIN NAME PORT BASE`: a fresh data dir under BASE, removed with its log when the
# script exits, `BIN serve` on 127.0.0.1:PORT in it (`serve`) and a key minted for the app
# `default`; sets `dir`, `addr`, `pid` and `key`.
scratch() {
  addr=127.0.0.1:$3
  dir=$(mktemp -d "$4/inlet-$2.XXXXXX")
  pid=
  trap 'scratch_cleanup' EXIT
  serve "$1" "$dir" "$addr"
  key=$("$1" --data "$dir" keys mint --app default --label "$2" 2> /dev/null)
}

scratch_cleanup() {
  [ -n "$pid" ] && kill "$pid" 2> /dev/null && wait "$pid" 2> /dev/null
  rm -rf "$dir" "$dir.log"
}
