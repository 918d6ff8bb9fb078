#!/usr/bin/env bash
# Build rfake's MPI test image (see images/mpi/README.md):
#
#   images/mpi/build-mpi-image.sh OUTDIR        # as root
#
# Makes, in OUTDIR:
#   rootfs/       a Debian 12 root (debootstrap minbase + Open MPI + PMIx), kept
#                 as a cache: made again only when missing, unfinished, or made
#                 with another package list (rootfs.stamp says what it is)
#   mpi-test      images/mpi/mpi-test.c compiled with the host's mpicc
#   mpi.toml      a copy of images/mpi/mpi.toml (its paths are relative to it)
#   mpi.sqfs      the image: rfake build --skip-special OUTDIR/mpi.sqfs OUTDIR/mpi.toml
#
# Idempotent: running it again reuses rootfs/ and rebuilds the rest.
#
# Needs: root, debootstrap, chroot, the host's Open MPI compiler wrapper
# (apt-get install libopenmpi-dev openmpi-bin) of the same version as the image's,
# and a built rfake.
# Environment:
#   RFAKE_BIN       rfake to build with (default /work/main/target/debug/rfake)
#   DEBIAN_MIRROR   default http://deb.debian.org/debian
#   DEBIAN_SECURITY default http://deb.debian.org/debian-security
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
rfake=${RFAKE_BIN:-/work/main/target/debug/rfake}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
suite=bookworm
# Open MPI's runtime (libopenmpi3 holds the MCA components, among them
# mca_pmix_ext3x.so, the client of the external PMIx), PMIx itself (libpmix2,
# the library Slurm's mpi/pmix plugin and the host's mpirun serve), and
# openmpi-bin (mpirun/orted inside the image, for singleton runs and for
# launching from inside). debootstrap adds their Depends (hwloc, libevent,
# libfabric, ucx, verbs, munge, openssh-client, ...), not their Recommends.
packages=openmpi-bin,libopenmpi3,libpmix2,openmpi-common
# Packages whose versions must be the same on the host and in the image.
match=(libpmix2 libopenmpi3 openmpi-common)

die() { echo "build-mpi-image.sh: $*" >&2; exit 2; }

[[ $# -eq 1 && -n $1 ]] || { echo "usage: build-mpi-image.sh OUTDIR" >&2; exit 64; }
[[ $(id -u) == 0 ]] || die "must run as root (debootstrap and chroot)"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap"
command -v mpicc >/dev/null || die "mpicc missing: apt-get install libopenmpi-dev openmpi-bin"
[[ -x $rfake ]] || die "$rfake missing: cargo build (or set RFAKE_BIN)"

mkdir -p "$1"
out=$(cd "$1" && pwd)
rootfs=$out/rootfs
stamp=$out/rootfs.stamp
want_stamp="debootstrap --variant=minbase --include=$packages $suite $mirror + $suite-updates + $suite-security"

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

# --- 1. the Debian root (cached) -----------------------------------------
if [[ -d $rootfs && -f $stamp && $(cat "$stamp") == "$want_stamp" ]]; then
  echo "build-mpi-image.sh: $rootfs is there ($(cat "$stamp")): no debootstrap"
else
  if [[ -e $rootfs ]]; then
    echo "build-mpi-image.sh: $rootfs unfinished or made differently: making it again"
    rm -rf --one-file-system "$rootfs"
  fi
  rm -f "$stamp"
  echo "build-mpi-image.sh: debootstrap --variant=minbase --include=$packages $suite $rootfs $mirror"
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
    >"$out/debootstrap.log" 2>&1 || {
    tail -20 "$out/debootstrap.log" >&2
    die "debootstrap failed (log: $out/debootstrap.log)"
  }
  step_done "debootstrap"

  # debootstrap takes one suite: bring the root up to the point release and
  # security updates the host has, so that PMIx and Open MPI are the same
  # builds on both sides (Debian 12's libpmix2 is 4.2.2-1+deb12u1 from
  # bookworm-security, debootstrap alone gives 4.2.2-1).
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
EOF
  {
    chroot "$rootfs" apt-get -q update
    DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get -q -y \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade
    chroot "$rootfs" apt-get clean
  } >>"$out/debootstrap.log" 2>&1 || {
    tail -20 "$out/debootstrap.log" >&2
    die "apt-get upgrade inside $rootfs failed (log: $out/debootstrap.log)"
  }
  # The package lists are only needed to install more: 40+ MB less in the image.
  find "$rootfs/var/lib/apt/lists" -mindepth 1 -maxdepth 1 -type f -delete
  # debootstrap copied the build host's name and resolver: not the image's
  # business (and it would make the image differ from host to host).
  echo localhost >"$rootfs/etc/hostname"
  : >"$rootfs/etc/resolv.conf"
  echo "$want_stamp" >"$stamp"
  step_done "apt-get upgrade in the root"
fi

# --- 2. the same Open MPI and PMIx on both sides --------------------------
# The host side is what launches the ranks (mpirun's orted or Slurm's
# mpi/pmix plugin: both serve PMIx from the host's libpmix2) and what the
# program is compiled against (mpicc). A different upstream version fails;
# a different Debian revision of the same upstream version only warns.
for p in "${match[@]}"; do
  h=$(pkg_version "$p") i=$(pkg_version "$p" "$rootfs")
  if [[ $h == "$i" ]]; then
    echo "build-mpi-image.sh: $p $i on the host and in the image"
  elif [[ ${h%%-*} == "${i%%-*}" ]]; then
    echo "build-mpi-image.sh: warning: $p is $h on the host, $i in the image (same upstream version)" >&2
  else
    die "$p is $h on the host but $i in the image: install the host's Debian 12 packages (or rm -r $rootfs)"
  fi
done
h=$(pkg_version libopenmpi-dev) i=$(pkg_version libopenmpi3 "$rootfs")
[[ ${h%%-*} == "${i%%-*}" ]] || die "host mpicc is from libopenmpi-dev $h, the image has libopenmpi3 $i"

# --- 3. the test program, with the host's mpicc ---------------------------
mpicc -O2 -Wall -Wextra -o "$out/mpi-test.tmp" "$here/mpi-test.c"
mv -f "$out/mpi-test.tmp" "$out/mpi-test"
step_done "compile (mpicc)"

# --- 4. the image ----------------------------------------------------------
# The recipe's paths are relative to the recipe file: the copy in OUTDIR
# finds rootfs/ and mpi-test beside it.
cp -f "$here/mpi.toml" "$out/mpi.toml"
"$rfake" build --skip-special "$out/mpi.sqfs" "$out/mpi.toml" 2>"$out/build.log" || {
  grep -v 'skip' "$out/build.log" | tail -20 >&2
  die "rfake build failed (log: $out/build.log)"
}
step_done "rfake build"
echo "build-mpi-image.sh: $(grep -ci 'skip' "$out/build.log" || true) lines about skipped special files in $out/build.log"

# Readable by all (the tests run the image as an unprivileged user). Not
# rootfs/: the image is built from its modes as they are.
chmod a+rX "$out" "$out/mpi.sqfs" "$out/mpi-test" "$out/mpi.toml"

# --- 5. check ----------------------------------------------------------------
listing=$("$rfake" inspect --list /opt/mpi-test "$out/mpi.sqfs")
echo "$listing"
grep -q 'mpi-test' <<<"$listing" ||
  die "/opt/mpi-test/mpi-test is not in $out/mpi.sqfs"
step_done "rfake inspect"

size=$(stat -c %s "$out/mpi.sqfs")
echo "build-mpi-image.sh: $out/mpi.sqfs: $size bytes ($((size / 1048576)) MiB)," \
  "from a root of $(du -sh "$rootfs" | cut -f1); total $(since "$t_all") s"
