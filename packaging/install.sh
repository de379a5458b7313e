#!/bin/sh
# Installs inlet on a systemd host without dpkg: the binary in $PREFIX/bin, the unit in
# /etc/systemd/system (pointing at that binary), the example config in /etc/inlet (kept if
# present), the inlet system user; then enables and starts the service.
#
#   sudo packaging/install.sh [--binary PATH]
#
# With DESTDIR set it only stages the files under $DESTDIR (no user, no systemctl).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
binary="$here/../target/release/inlet"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH]" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "$binary is not an executable; build with cargo build --release" >&2; exit 1; }

install -D -m 0755 "$binary" "$destdir$prefix/bin/inlet"
install -d -m 0755 "$destdir/etc/systemd/system" "$destdir/etc/inlet"
sed "s#/usr/bin/inlet#$prefix/bin/inlet#g" "$here/inlet.service" \
  > "$destdir/etc/systemd/system/inlet.service"
chmod 0644 "$destdir/etc/systemd/system/inlet.service"
if [ ! -e "$destdir/etc/inlet/inlet.toml" ]; then
  install -m 0644 "$here/inlet.toml" "$destdir/etc/inlet/inlet.toml"
fi
[ -n "$destdir" ] && exit 0

if ! getent passwd inlet >/dev/null; then
  nologin=$(command -v nologin || echo /bin/false)
  useradd --system --user-group --home-dir /var/lib/inlet --no-create-home \
    --shell "$nologin" inlet
fi
"$prefix/bin/inlet" --config /etc/inlet/inlet.toml check-config >/dev/null
systemctl daemon-reload
systemctl enable --now inlet.service
echo "inlet installed; status: systemctl status inlet" >&2
