#!/usr/bin/env bash
# Build rfake's MPICH test image (see images/mpich/README.md):
#
#   images/mpich/build-mpich-image.sh OUTDIR [BASE]      # as root
#
# BASE is the MPI test image that images/mpi/build-mpi-image.sh made
# (default /var/tmp/rfake-mpi-image/mpi.sqfs): its Debian 12 root is the
# start (Bootstrap: localimage), so no debootstrap here. `rfake build` runs
# as the unprivileged user $RFAKE_BUILD_USER (%post as fakeroot). This
# script keeps what needs the host: the test program compiled with the
# host's mpicc.mpich, the check that the image's MPICH is the host's, and
# the cache.
#
# Makes, in OUTDIR:
#   mpi-test      images/mpi/mpi-test.c compiled with the host's mpicc.mpich
#   mpich.def     the copy of images/mpich/mpich.def that was built (mirrors replaced)
#   mpich.sqfs    the image
#   image.stamp   what the image was built from: the sha256 of the definition
#                 copy, of mpi-test and of BASE, and the host's MPICH version;
#                 while it matches, the image is kept (no build)
#   build.log     the last build's output
#
# Needs: root (runuser), the host's MPICH compiler wrapper (apt-get install
# mpich libmpich-dev: mpicc.mpich; Open MPI stays the default mpicc), a built
# rfake, BASE, and the user $RFAKE_BUILD_USER (tests/setup-host.sh makes it).
# Environment:
#   RFAKE_BIN        rfake to build with (default /work/main/target/debug/rfake)
#   RFAKE_BUILD_USER the user who builds (default $RFAKE_TEST_USER, else rfake-test)
#   DEBIAN_MIRROR    default http://deb.debian.org/debian
#   DEBIAN_SECURITY  default http://deb.debian.org/debian-security
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=images/build-as-user.sh
. "$here/../build-as-user.sh"
rfake=${RFAKE_BIN:-/work/main/target/debug/rfake}
user=${RFAKE_BUILD_USER:-${RFAKE_TEST_USER:-rfake-test}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

die() { echo "build-mpich-image.sh: $*" >&2; exit 2; }

[[ ($# -eq 1 || $# -eq 2) && -n $1 ]] || { echo "usage: build-mpich-image.sh OUTDIR [BASE]" >&2; exit 64; }
base=${2:-/var/tmp/rfake-mpi-image/mpi.sqfs}
[[ $(id -u) == 0 ]] || die "must run as root (runuser)"
command -v mpicc.mpich >/dev/null || die "mpicc.mpich missing: apt-get install mpich libmpich-dev"
[[ -x $rfake ]] || die "$rfake missing: cargo build (or set RFAKE_BIN)"
[[ -f $base ]] || die "base image $base missing: images/mpi/build-mpi-image.sh first"
id "$user" >/dev/null 2>&1 || die "no user $user: run tests/setup-host.sh (or set RFAKE_BUILD_USER)"

mkdir -p "$1"
out=$(cd "$1" && pwd)
stamp=$out/image.stamp
t_all=$EPOCHREALTIME
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

pkg_version() { # PACKAGE [ROOT-DPKG-STATUS-DIR]
  local admin=()
  [[ $# -gt 1 ]] && admin=(--admindir="$2")
  dpkg-query "${admin[@]}" -W -f '${Version}' "$1" 2>/dev/null || echo "(none)"
}

# --- 1. the test program, with the host's MPICH ----------------------------
mpicc.mpich -O2 -Wall -Wextra -o "$out/mpi-test.tmp" "$here/../mpi/mpi-test.c"
mv -f "$out/mpi-test.tmp" "$out/mpi-test"

# --- 2. the definition file, and what the image is made from ---------------
sed -e "s|http://deb.debian.org/debian-security$|$security|" \
    -e "s|http://deb.debian.org/debian$|$mirror|" \
    "$here/mpich.def" >"$out/mpich.def.new"
want_stamp=$(
  echo "mpich.def $(sha256sum <"$out/mpich.def.new" | cut -d' ' -f1)"
  echo "mpi-test $(sha256sum <"$out/mpi-test" | cut -d' ' -f1)"
  echo "base $(sha256sum <"$base" | cut -d' ' -f1)"
  for p in libmpich12 libmpich-dev; do echo "host $p $(pkg_version "$p")"; done
)

# --- 3. the image (cached) ---------------------------------------------------
if [[ -f $out/mpich.sqfs && -f $stamp && $(cat "$stamp") == "$want_stamp" ]]; then
  echo "build-mpich-image.sh: $out/mpich.sqfs is up to date ($stamp): no build"
  rm -f "$out/mpich.def.new"
else
  rm -f "$stamp"
  mv -f "$out/mpich.def.new" "$out/mpich.def"
  echo "build-mpich-image.sh: as $user: rfake build mpich.sqfs mpich.def (Bootstrap: localimage $base)"
  build_as_user "$user" "$rfake" "$out" mpich.def mpich.sqfs "$out/mpi-test" "$base:mpi.sqfs" ||
    die "rfake build as $user failed (log: $out/build.log)"
  echo "build-mpich-image.sh: built in $(since "$t_all") s"
fi

# --- 4. the same MPICH on both sides -----------------------------------------
# The program is compiled against the host's MPICH and runs with the
# image's libmpich.so.12; hydra's PMI-1 wire protocol is stable, the ABI
# must match: the same upstream version.
status=$(mktemp -d)
trap 'rm -rf "$status"' EXIT
"$rfake" inspect --cat /var/lib/dpkg/status "$out/mpich.sqfs" >"$status/status" ||
  die "cannot read /var/lib/dpkg/status in $out/mpich.sqfs"
h=$(pkg_version libmpich12) i=$(pkg_version libmpich12 "$status")
[[ ${h%%-*} == "${i%%-*}" ]] || die "libmpich12 is $h on the host but $i in the image (or rm $stamp)"
ompi=$(dpkg-query --admindir="$status" -W -f '${db:Status-Status}' libopenmpi3 2>/dev/null || true)
[[ $ompi == "" || $ompi == not-installed ]] || die "the image still has libopenmpi3 ($ompi)"
echo "build-mpich-image.sh: libmpich12 $h on the host, $i in the image"
echo "$want_stamp" >"$stamp"

chmod a+rX "$out" "$out/mpich.sqfs" "$out/mpi-test" "$out/mpich.def"
size=$(stat -c %s "$out/mpich.sqfs")
echo "build-mpich-image.sh: $out/mpich.sqfs: $size bytes ($((size / 1048576)) MiB);" \
  "total $(since "$t_all") s"
