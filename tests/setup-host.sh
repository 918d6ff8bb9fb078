#!/usr/bin/env bash
# Prepare a Debian 12 host for rfake's tests and demo (run as root):
#   - install the Debian packages rfake and its tests use,
#   - make /dev/fuse usable by users (mode 0666, as every cluster has it;
#     a fresh VM may have 0600),
#   - create the unprivileged user the integration tests run as, with a
#     subordinate uid range.
# Idempotent. The user name comes from RFAKE_TEST_USER (default rfake-test).
set -euo pipefail

PACKAGES=(
  squashfuse fuse3          # the mount layer and libfuse3
  squashfs-tools            # mksquashfs/unsquashfs: build and check test images
  busybox-static            # the demo and test images' userland
  python3                   # tests/run.sh reads cargo's JSON
  procps util-linux         # ps, runuser, setpriv in scripts
  podman uidmap             # OCI fixtures for rfake build (tests/make-oci-fixtures.sh)
  xz-utils zstd             # compressed tarball sources
  libsquashfs-dev libfuse3-dev libclang-dev pkg-config  # libsquashfs (build, inspect, FUSE server), libfuse3 (FUSE server); bindgen
  slurmctld slurmd slurm-client munge       # the test Slurm cluster (slurm/cluster.sh)
  libslurm-dev make                         # rfake's SPANK plugin (spank/: spank.h, make)
  openmpi-bin libopenmpi-dev libpmix2       # MPI launches; mpicc for the MPI test program
  mpich libmpich-dev                        # hydra (mpiexec.hydra) and mpicc.mpich for tests/hydra.rs; Open MPI stays the default mpirun/mpicc (priority 50 > 40)
  debootstrap                               # Bootstrap: debootstrap (tests/debootstrap.rs, the MPI test image)
  gcc libc6-dev                             # the fake GPU driver and its probe (tests/gpu/make-fake-driver.sh)
  e2fsprogs fuse2fs                         # rfake overlay create (mkfs.ext3 -d), debugfs; a FUSE upper (tests/overlay.rs)
  dpkg-dev debhelper lintian               # the Debian package (packaging/build-deb.sh, check-deb.sh)
  fuse-overlayfs                            # --overlay IMG: the overlay over a fuse2fs upper (the kernel refuses it)
  docker-registry skopeo apache2-utils openssl curl  # the test registries (tests/registry/setup.sh);
                                            # the package's own service on :5000 is not used
)

if [ "$(id -u)" != 0 ]; then
  echo "setup-host.sh: must run as root (installs packages, sets /dev/fuse, creates a user)" >&2
  exit 2
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-host.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# With MPICH installed beside it, Open MPI must stay the host's mpirun and
# mpicc (tests/mpi.rs and images/mpi use them; MPICH is used by its own
# names, mpiexec.hydra and mpicc.mpich).
for alt in mpirun mpi; do
  current=$(update-alternatives --query "$alt" 2>/dev/null | sed -n 's/^Value: //p')
  case $current in
    *openmpi*) ;;
    *) echo "setup-host.sh: $alt is $current, not Open MPI's: update-alternatives --auto $alt" >&2; exit 2 ;;
  esac
done

# Real clusters ship /dev/fuse as 0666 (the fuse3 package's udev rule); a
# fresh VM without udev may have 0600.
if [ ! -c /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
fi
chmod 0666 /dev/fuse

user=${RFAKE_TEST_USER:-rfake-test}
if ! id "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$user"
fi
# A subordinate uid and gid range (useradd makes one when /etc/subuid
# exists): tests/warm.rs plays another user with it (newuidmap), to take a
# warm mount's socket name first.
if ! grep -q "^$user:" /etc/subuid 2>/dev/null || ! grep -q "^$user:" /etc/subgid 2>/dev/null; then
  usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "$user"
fi
# A scratch directory, as clusters have (the tests' site config lists
# /scratch/$USER).
install -d -o "$user" -g "$(id -gn "$user")" -m 0755 "/scratch/$user"

# The TLS test registry's name (tests/registry/setup.sh): loopback, but not a
# name rfake speaks plain http to (localhost, 127.0.0.0/8, ::1).
if ! grep -qE '^127\.0\.0\.1[[:space:]].*\bregistry\.rfake\.test\b' /etc/hosts; then
  printf '\n127.0.0.1 registry.rfake.test\n' >>/etc/hosts
fi

echo "setup-host.sh: ready (user $user, /dev/fuse $(stat -c %a /dev/fuse))"
