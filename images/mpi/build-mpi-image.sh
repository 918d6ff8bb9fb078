#!/usr/bin/env bash
# Build rfake's MPI test image (see images/mpi/README.md):
#
#   images/mpi/build-mpi-image.sh OUTDIR        # as root
#
# The image is built from the definition file images/mpi/mpi.def by
# `rfake build`, run as the unprivileged user $RFAKE_BUILD_USER (Bootstrap:
# debootstrap and %post as fakeroot: no root involved). This script keeps
# what needs the host: the test program compiled with the host's mpicc, the
# check that the image's Open MPI and PMIx are the host's, and the cache.
#
# Makes, in OUTDIR:
#   mpi-test      images/mpi/mpi-test.c compiled with the host's mpicc
#   mpi.def       the copy of images/mpi/mpi.def that was built (mirrors replaced)
#   mpi.sqfs      the image
#   rootfs/       the image unpacked (unsquashfs, as root): a Debian 12 root for
#                 other tests (tests/run.sh gives it to tests/registry/setup.sh)
#   image.stamp   what the image was built from: the definition file's and
#                 mpi-test's sha256 and the host's package versions; while it
#                 matches, the image and rootfs/ are kept (no debootstrap)
#   build.log     the last build's output
#
# Needs: root (runuser, unsquashfs into a root-owned rootfs/), debootstrap,
# squashfs-tools, the host's Open MPI compiler wrapper (apt-get install
# libopenmpi-dev openmpi-bin) of the same version as the image's, a built
# rfake, and the user $RFAKE_BUILD_USER (tests/setup-host.sh makes it).
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
# Packages whose versions must be the same on the host and in the image.
match=(libpmix2 libopenmpi3 openmpi-common)

die() { echo "build-mpi-image.sh: $*" >&2; exit 2; }

[[ $# -eq 1 && -n $1 ]] || { echo "usage: build-mpi-image.sh OUTDIR" >&2; exit 64; }
[[ $(id -u) == 0 ]] || die "must run as root (runuser, unsquashfs of a root-owned tree)"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap"
command -v unsquashfs >/dev/null || die "unsquashfs missing: apt-get install squashfs-tools"
command -v mpicc >/dev/null || die "mpicc missing: apt-get install libopenmpi-dev openmpi-bin"
[[ -x $rfake ]] || die "$rfake missing: cargo build (or set RFAKE_BIN)"
id "$user" >/dev/null 2>&1 || die "no user $user: run tests/setup-host.sh (or set RFAKE_BUILD_USER)"

mkdir -p "$1"
out=$(cd "$1" && pwd)
stamp=$out/image.stamp

t_all=$EPOCHREALTIME
t_step=$t_all
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step_done() { # NAME: prints how long the step took (since the last call)
  printf 'build-mpi-image.sh: time: %-28s %7s s\n' "$1" "$(since "$t_step")"
  t_step=$EPOCHREALTIME
}

# dpkg-query against the host, or against ROOT's database.
pkg_version() { # PACKAGE [ROOT]
  local admin=()
  [[ $# -gt 1 ]] && admin=(--admindir="$2/var/lib/dpkg")
  dpkg-query "${admin[@]}" -W -f '${Version}' "$1" 2>/dev/null || echo "(none)"
}

# --- 1. the test program, with the host's mpicc ---------------------------
mpicc -O2 -Wall -Wextra -o "$out/mpi-test.tmp" "$here/mpi-test.c"
mv -f "$out/mpi-test.tmp" "$out/mpi-test"
step_done "compile (mpicc)"

# --- 2. the definition file, and what the image is made from ----------------
sed -e "s|http://deb.debian.org/debian-security$|$security|" \
    -e "s|http://deb.debian.org/debian$|$mirror|" \
    "$here/mpi.def" >"$out/mpi.def.new"
want_stamp=$(
  echo "mpi.def $(sha256sum <"$out/mpi.def.new" | cut -d' ' -f1)"
  echo "mpi-test $(sha256sum <"$out/mpi-test" | cut -d' ' -f1)"
  for p in "${match[@]}" libopenmpi-dev; do echo "host $p $(pkg_version "$p")"; done
)

# --- 3. the image (cached) ----------------------------------------------------
if [[ -f $out/mpi.sqfs && -d $out/rootfs && -f $stamp && $(cat "$stamp") == "$want_stamp" ]]; then
  echo "build-mpi-image.sh: $out/mpi.sqfs is up to date ($stamp): no build"
  rm -f "$out/mpi.def.new"
else
  rm -f "$stamp"
  mv -f "$out/mpi.def.new" "$out/mpi.def"
  echo "build-mpi-image.sh: as $user: rfake build mpi.sqfs mpi.def (Bootstrap: debootstrap bookworm)"
  build_as_user "$user" "$rfake" "$out" mpi.def mpi.sqfs "$out/mpi-test" ||
    die "rfake build as $user failed (log: $out/build.log)"
  step_done "rfake build (as $user)"
  # The unpacked root, for what wants a Debian 12 directory.
  rm -rf --one-file-system "$out/rootfs"
  unsquashfs -q -no-progress -d "$out/rootfs" "$out/mpi.sqfs" >/dev/null
  step_done "unsquashfs rootfs/"
fi

# --- 4. the same Open MPI and PMIx on both sides --------------------------
# The host side is what launches the ranks (mpirun's orted or Slurm's
# mpi/pmix plugin: both serve PMIx from the host's libpmix2) and what the
# program is compiled against (mpicc). A different upstream version fails;
# a different Debian revision of the same upstream version only warns.
for p in "${match[@]}"; do
  h=$(pkg_version "$p") i=$(pkg_version "$p" "$out/rootfs")
  if [[ $h == "$i" ]]; then
    echo "build-mpi-image.sh: $p $i on the host and in the image"
  elif [[ ${h%%-*} == "${i%%-*}" ]]; then
    echo "build-mpi-image.sh: warning: $p is $h on the host, $i in the image (same upstream version)" >&2
  else
    die "$p is $h on the host but $i in the image: install the host's Debian 12 packages (or rm $stamp)"
  fi
done
h=$(pkg_version libopenmpi-dev) i=$(pkg_version libopenmpi3 "$out/rootfs")
[[ ${h%%-*} == "${i%%-*}" ]] || die "host mpicc is from libopenmpi-dev $h, the image has libopenmpi3 $i"
echo "$want_stamp" >"$stamp"

# Readable by all (the tests run the image as an unprivileged user).
chmod a+rX "$out" "$out/mpi.sqfs" "$out/mpi-test" "$out/mpi.def"

# --- 5. check ----------------------------------------------------------------
listing=$("$rfake" inspect --list /opt/mpi-test "$out/mpi.sqfs")
echo "$listing"
grep -q 'mpi-test' <<<"$listing" ||
  die "/opt/mpi-test/mpi-test is not in $out/mpi.sqfs"
step_done "rfake inspect"

size=$(stat -c %s "$out/mpi.sqfs")
echo "build-mpi-image.sh: $out/mpi.sqfs: $size bytes ($((size / 1048576)) MiB);" \
  "total $(since "$t_all") s"
