#!/usr/bin/env bash
# Install rfake's Debian package into this (real) system, check it from the
# installed files only, then remove and purge it and check that nothing is
# left (but the conffile after `remove`). As root, on a Debian 12 host where
# rfake is not installed:
#   packaging/check-deb.sh [DEB] [USER]
# DEB: default target/debian/rfake_*.deb; USER: the unprivileged user that
# runs `rfake exec` (default rfake-test); RFAKE_CHECK_IMAGE: the image
# (default /var/tmp/rfake-static/images/demo.sqfs).
# Packages apt pulls in for it (Depends, Recommends) are purged again at the
# end. Runs lintian on DEB when it is installed. Exit 0: every check passed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
deb=${1:-$(ls "$repo"/target/debian/rfake_*.deb | tail -n 1)}
deb=$(realpath "$deb")
user=${2:-rfake-test}
image=${RFAKE_CHECK_IMAGE:-/var/tmp/rfake-static/images/demo.sqfs}
export DEBIAN_FRONTEND=noninteractive

fails=0
ok() { echo "ok    $*"; }
bad() { echo "FAIL  $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }

[ "$(id -u)" = 0 ] || { echo "check-deb.sh: run me as root" >&2; exit 2; }
if dpkg-query -W -f='${Status}' rfake 2>/dev/null | grep -qv "not-installed"; then
  echo "check-deb.sh: rfake is installed already ($(dpkg-query -W -f='${Status}' rfake)); refusing" >&2
  exit 2
fi
# Every file of the package must be new, so that purging it undoes the install.
mapfile -t files < <(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {sub(/^\./, "", $6); print $6}')
for f in "${files[@]}"; do
  if [ -e "$f" ]; then echo "check-deb.sh: $f exists already; refusing" >&2; exit 2; fi
done
[ ! -e /etc/rfake ] || { echo "check-deb.sh: /etc/rfake exists already; refusing" >&2; exit 2; }

before=$(mktemp)
# The AppArmor profile is installed to /etc/apparmor.d only where AppArmor's
# 4.0 policy ABI exists (packaging/debian/rfake.postinst). On a host without
# AppArmor (Debian 12 as installed), a stand-in /etc/apparmor.d/abi/4.0
# checks that path too: the postinst copies the profile, and loads it only
# where AppArmor is enabled, which it is not here. What the stand-in made is
# removed at the end.
aa_made=()
if [ ! -e /etc/apparmor.d/abi/4.0 ] && ! command -v apparmor_parser >/dev/null; then
  for d in /etc/apparmor.d /etc/apparmor.d/abi; do
    [ -e "$d" ] || { mkdir "$d"; aa_made=("$d" "${aa_made[@]}"); }
  done
  touch /etc/apparmor.d/abi/4.0
  aa_made=(/etc/apparmor.d/abi/4.0 "${aa_made[@]}")
fi
cleanup() {
  rm -f "$before"
  local p
  for p in "${aa_made[@]}"; do
    if [ -d "$p" ]; then rmdir "$p"; else rm -f "$p"; fi
  done
}
trap cleanup EXIT
dpkg-query -W -f='${Package}\n' | sort > "$before"

echo "== apt install $deb"
apt-get install -y -q "$deb" >/dev/null
added=$(dpkg-query -W -f='${Package}\n' | sort | comm -13 "$before" - | grep -vx rfake || true)
[ -z "$added" ] || echo "apt also installed: $added"

echo "== installed"
check "rfake --version names a commit" sh -c '/usr/bin/rfake --version | grep -q "^commit: [0-9a-f]"'
/usr/bin/rfake --version | sed 's/^/      /'
check "man -w rfake" man -w rfake
check "man -w rfake-exec" man -w rfake-exec
check "bash completion" test -s /usr/share/bash-completion/completions/rfake
check "zsh completion" test -s /usr/share/zsh/vendor-completions/_rfake
check "fish completion" test -s /usr/share/fish/vendor_completions.d/rfake.fish
check "conffile /etc/rfake/rfake.toml" sh -c \
  "dpkg-query -W -f='\${Conffiles}' rfake | grep -q '^ /etc/rfake/rfake.toml '"
check "conffile sets nothing" sh -c "! grep -v '^#' /etc/rfake/rfake.toml | grep -q ."
check "docs" test -e /usr/share/doc/rfake/copyright
# rfake loads these when used (dlopen): not in NEEDED, so named in
# debian/control rather than computed by dh_shlibdeps.
check "Depends: libfuse3-3 and libsquashfs1 (loaded when used)" sh -c \
  "dpkg-query -W -f='\${Depends}' rfake | grep -q 'libfuse3-3 (>= 3.12)' &&
   dpkg-query -W -f='\${Depends}' rfake | grep -q 'libsquashfs1 (>= 1.2.0)'"
check "AppArmor profile shipped" test -s /usr/share/rfake/apparmor/rfake
if [ -e /etc/apparmor.d/abi/4.0 ]; then
  check "AppArmor profile installed (4.0 ABI present)" cmp -s /usr/share/rfake/apparmor/rfake /etc/apparmor.d/rfake
else
  check "AppArmor profile not installed (no 4.0 ABI)" test ! -e /etc/apparmor.d/rfake
fi
home=$(getent passwd "$user" | cut -d: -f6)
as_user() {
  (cd "$home" && runuser -u "$user" -- env -i PATH=/usr/bin:/bin HOME="$home" USER="$user" \
    LOGNAME="$user" LANG=C.UTF-8 "$@")
}
if as_user /usr/bin/rfake doctor > /tmp/rfake-check-doctor.$$ 2>&1; then
  ok "rfake doctor as $user"
else
  bad "rfake doctor as $user"; sed 's/^/      /' /tmp/rfake-check-doctor.$$
fi
rm -f /tmp/rfake-check-doctor.$$
got=$(as_user /usr/bin/rfake exec "$image" /bin/sh -c 'echo "in $(id -u)"' 2>&1 || true)
if [ "$got" = "in 0" ]; then ok "rfake exec $image as $user"; else bad "rfake exec as $user: $got"; fi

echo "== apt remove"
apt-get remove -y -q rfake >/dev/null
check "status config-files" sh -c "dpkg-query -W -f='\${Status}' rfake | grep -q 'config-files'"
check "conffile kept" test -e /etc/rfake/rfake.toml
for f in "${files[@]}"; do
  [ "$f" = /etc/rfake/rfake.toml ] && continue
  [ ! -e "$f" ] || bad "left after remove: $f"
done
check "AppArmor profile removed" test ! -e /etc/apparmor.d/rfake

echo "== apt purge"
apt-get purge -y -q rfake >/dev/null
# shellcheck disable=SC2086
[ -z "$added" ] || apt-get purge -y -q $added >/dev/null
check "not known to dpkg" sh -c "! dpkg-query -W rfake"
check "/etc/rfake gone" test ! -e /etc/rfake
for f in "${files[@]}"; do
  [ ! -e "$f" ] || bad "left after purge: $f"
done
check "package set as before" sh -c "dpkg-query -W -f='\${Package}\n' | sort | cmp -s - $before"

if command -v lintian >/dev/null; then
  echo "== lintian"
  if lintian --fail-on error "$deb"; then ok "lintian: no errors"; else bad "lintian: errors"; fi
fi

if [ "$fails" -eq 0 ]; then echo "check-deb.sh: all checks passed"; else echo "check-deb.sh: $fails check(s) failed"; exit 1; fi
