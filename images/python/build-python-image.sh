#!/usr/bin/env bash
# Build rfake's Python test image (images/python/python.def):
#
#   images/python/build-python-image.sh OUTDIR [BASE]      # as root
#
# BASE is the MPI test image that images/mpi/build-mpi-image.sh made
# (default /var/tmp/rfake-mpi-image/mpi.sqfs): its Debian 12 root is the
# start (Bootstrap: localimage), and %post installs python3 and pip from
# Debian. `rfake build` runs as the unprivileged user $RFAKE_BUILD_USER.
#
# Makes, in OUTDIR:
#   python.def    the copy of images/python/python.def that was built (mirrors replaced)
#   python.sqfs   the image
#   image.stamp   the sha256 of the definition copy and of BASE; while it
#                 matches, the image is kept (no build)
#   build.log     the last build's output
#
# Environment: RFAKE_BIN (rfake to build with), RFAKE_BUILD_USER (default
# $RFAKE_TEST_USER, else rfake-test), DEBIAN_MIRROR, DEBIAN_SECURITY.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=images/build-as-user.sh
. "$here/../build-as-user.sh"
rfake=${RFAKE_BIN:-$here/../../target/debug/rfake}
user=${RFAKE_BUILD_USER:-${RFAKE_TEST_USER:-rfake-test}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

die() { echo "build-python-image.sh: $*" >&2; exit 2; }

[[ ($# -eq 1 || $# -eq 2) && -n $1 ]] || { echo "usage: build-python-image.sh OUTDIR [BASE]" >&2; exit 64; }
base=${2:-/var/tmp/rfake-mpi-image/mpi.sqfs}
[[ $(id -u) == 0 ]] || die "must run as root (runuser)"
[[ -x $rfake ]] || die "$rfake missing: cargo build (or set RFAKE_BIN)"
[[ -f $base ]] || die "base image $base missing: images/mpi/build-mpi-image.sh first"
id "$user" >/dev/null 2>&1 || die "no user $user: run tests/setup-host.sh (or set RFAKE_BUILD_USER)"

mkdir -p "$1"
out=$(cd "$1" && pwd)
stamp=$out/image.stamp

sed -e "s|http://deb.debian.org/debian-security$|$security|" \
    -e "s|http://deb.debian.org/debian$|$mirror|" \
    "$here/python.def" >"$out/python.def.new"
want_stamp=$(
  echo "python.def $(sha256sum <"$out/python.def.new" | cut -d' ' -f1)"
  echo "base $(sha256sum <"$base" | cut -d' ' -f1)"
)

if [[ -f $out/python.sqfs && -f $stamp && $(cat "$stamp") == "$want_stamp" ]]; then
  echo "build-python-image.sh: $out/python.sqfs is up to date ($stamp): no build"
  rm -f "$out/python.def.new"
else
  rm -f "$stamp"
  mv -f "$out/python.def.new" "$out/python.def"
  echo "build-python-image.sh: as $user: rfake build python.sqfs python.def (Bootstrap: localimage $base)"
  build_as_user "$user" "$rfake" "$out" python.def python.sqfs "$base:mpi.sqfs" ||
    die "rfake build as $user failed (log: $out/build.log)"
  echo "$want_stamp" >"$stamp"
fi
chmod a+rX "$out" "$out/python.sqfs" "$out/python.def"
