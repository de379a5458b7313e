#!/bin/sh
# Builds inlet_<version>_<arch>.deb with dpkg-deb: the binary (stripped), the systemd unit,
# the example config (a conffile), a sysusers.d entry, copyright and changelog, and
# maintainer scripts that create the inlet user and enable the service (or, without
# systemd, say how to start it). Depends: from dpkg-shlibdeps (dpkg-dev). Needs binutils
# (strip), dpkg-dev and gzip.
#
#   packaging/build-deb.sh [--binary PATH] [--out DIR] [--compress xz|gzip|none] [--debug-symbols]
#
# Without --binary it runs `cargo build --release` and packages target/release/inlet.
# --debug-symbols also writes the stripped debug information next to the .deb
# (inlet_<version>_<arch>.debug; the binary names it in .gnu_debuglink, for gdb and
# backtraces of a crash).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
binary=""
out="$repo/target/debian"
compress=xz
debug_symbols=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --compress) compress=$2; shift 2 ;;
    --debug-symbols) debug_symbols=yes; shift ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR] [--compress xz|gzip|none] [--debug-symbols]" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  (cd "$repo" && cargo build --release --locked)
  binary="$repo/target/release/inlet"
fi
[ -x "$binary" ] || { echo "$binary is not an executable" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
arch=$(dpkg --print-architecture)
changelog="$here/changelog"
case "$(head -n 1 "$changelog")" in
  "inlet ($version) "*) ;;
  *) echo "$changelog: its first entry is not version $version (Cargo.toml)" >&2; exit 1 ;;
esac
# dpkg-shlibdeps wants the package tree at debian/<package> under a dir with debian/control.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/debian/inlet"
install -d -m 0755 "$stage" "$stage/DEBIAN"
printf 'Source: inlet\n\nPackage: inlet\nArchitecture: any\n' > "$work/debian/control"

install -D -m 0755 "$binary" "$stage/usr/bin/inlet"
mkdir -p "$out"
# Debug information is most of a Rust binary's size and is not needed to run it.
if [ -n "$debug_symbols" ]; then
  debug="$out/inlet_${version}_${arch}.debug"
  objcopy --only-keep-debug "$stage/usr/bin/inlet" "$debug"
  chmod 0644 "$debug"
fi
strip --strip-unneeded "$stage/usr/bin/inlet"
if [ -n "$debug_symbols" ]; then
  objcopy --add-gnu-debuglink="$debug" "$stage/usr/bin/inlet"
fi
shlibs=$(cd "$work" && dpkg-shlibdeps -O debian/inlet/usr/bin/inlet)
depends=${shlibs#shlibs:Depends=}
[ "$depends" != "$shlibs" ] && [ -n "$depends" ] || { echo "dpkg-shlibdeps said: $shlibs" >&2; exit 1; }
install -D -m 0644 "$here/inlet.service" "$stage/usr/lib/systemd/system/inlet.service"
install -D -m 0644 "$here/inlet.toml" "$stage/etc/inlet/inlet.toml"
install -D -m 0644 "$repo/README.md" "$stage/usr/share/doc/inlet/README.md"
install -m 0644 "$here/copyright" "$stage/usr/share/doc/inlet/copyright"
# A native package (no Debian revision): its changelog is changelog.gz.
gzip -9nc "$changelog" > "$stage/usr/share/doc/inlet/changelog.gz"
chmod 0644 "$stage/usr/share/doc/inlet/changelog.gz"
# The README links into docs/ (API reference, migration guides, design notes).
for doc in "$repo"/docs/*.md "$repo"/docs/design/*.md; do
  install -D -m 0644 "$doc" "$stage/usr/share/doc/inlet/${doc#"$repo"/}"
done
install -d -m 0755 "$stage/usr/lib/sysusers.d"
echo 'u inlet - "inlet event ingestion" /var/lib/inlet /usr/sbin/nologin' \
  > "$stage/usr/lib/sysusers.d/inlet.conf"
chmod 0644 "$stage/usr/lib/sysusers.d/inlet.conf"

cat > "$stage/DEBIAN/control" <<CONTROL
Package: inlet
Version: $version
Architecture: $arch
Maintainer: inlet maintainers <inlet@localhost>
Section: net
Priority: optional
Depends: adduser, $depends
Installed-Size: $(du -sk "$stage/usr" | cut -f1)
Description: self-hosted server-to-server event ingestion appliance
 inlet authenticates events POSTed by your backends with hashed keys, validates,
 dedupes and counts them against per-tenant quotas, and appends them durably to an
 embedded database. One binary, one systemd service.
CONTROL
echo /etc/inlet/inlet.toml > "$stage/DEBIAN/conffiles"

cat > "$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd inlet >/dev/null; then
    adduser --system --group --home /var/lib/inlet --no-create-home \
      --shell /usr/sbin/nologin --quiet inlet
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ -z "$2" ]; then
      systemctl enable --now inlet.service
    else
      systemctl try-restart inlet.service
    fi
  else
    cat >&2 <<'NEXT'

inlet is installed, but systemd is not running here, so the service was not started.
Next steps:
  1. The data dir, owned by the inlet user:
       install -d -m 0700 -o inlet -g inlet /var/lib/inlet
  2. Start the server as that user (under your own supervisor, e.g. runit or a container's
     entrypoint); it reads /etc/inlet/inlet.toml and prints the admin panel's one-time
     setup code on its first start:
       su -s /bin/sh inlet -c '/usr/bin/inlet --config /etc/inlet/inlet.toml serve'
  3. Mint a key for your backend:
       su -s /bin/sh inlet -c 'inlet --config /etc/inlet/inlet.toml keys mint --app default --label prod'
See /usr/share/doc/inlet/README.md ("Install on a VM").
NEXT
  fi
fi
exit 0
SCRIPT
cat > "$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now inlet.service || true
fi
exit 0
SCRIPT
cat > "$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
# The data in /var/lib/inlet is never removed by the package, not even on purge.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
SCRIPT
# Backs the database up before an upgrade's new binary first opens it.
install -m 0755 "$here/preinst" "$stage/DEBIAN/preinst"
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

deb="$out/inlet_${version}_${arch}.deb"
dpkg-deb "-Z$compress" --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
