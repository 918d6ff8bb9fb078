#!/usr/bin/env bash
# rfake's whole test suite: the README's test command, called by .ci/run.
#
# Run as root on a Debian 12 machine: it installs what the tests need
# (tests/setup-host.sh), builds rfake, its test binaries and the test images,
# then runs every test binary as the unprivileged user $RFAKE_TEST_USER
# (default rfake-test) in a scrubbed environment: tests run as root would
# prove nothing about rootless operation. Under CI=true a skipped test fails.
# Last, the Debian package is built, installed, checked and purged
# (packaging/check-deb.sh).
# The fuzz harnesses (unit tests named fuzz_*, see src/fuzz.rs) run for
# RFAKE_FUZZ_SECONDS each (default 20); a crasher's input is kept in
# $stage/work/fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$(id -u)" != 0 ]; then
  echo "tests/run.sh: run as root (sudo tests/run.sh): it installs packages and runs the tests as an unprivileged user" >&2
  exit 2
fi

tests/setup-host.sh
user=${RFAKE_TEST_USER:-rfake-test}

# Everything the test user reads lives in a fresh stage directory: the
# checkout may sit under a directory the user cannot enter (/root).
stage=/var/tmp/rfake-tests
# The MPI image (built from images/mpi/mpi.def by the test user: debootstrap,
# minutes) and its unpacked root are kept between runs while its inputs are
# unchanged (build-mpi-image.sh's image.stamp).
mpi_cache=${RFAKE_MPI_CACHE:-/var/tmp/rfake-mpi-image}
tests/registry/setup.sh stop "$stage"   # servers an interrupted run left
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/work"
chmod 0755 "$stage" "$stage/bin"
chown "$user:" "$stage/work"

echo "== build"
cargo build --locked --quiet
cargo test --locked --no-run --message-format=json 2>/dev/null >"$stage/artifacts.json"
cp target/debug/rfake "$stage/bin/rfake"
python3 - "$stage/artifacts.json" "$stage/bin" >"$stage/test-binaries" <<'PY'
import json, shutil, sys, os
out = sys.argv[2]
for line in open(sys.argv[1]):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("profile", {}).get("test") and msg.get("executable"):
        exe = msg["executable"]
        name = os.path.basename(exe)
        shutil.copy2(exe, os.path.join(out, name))
        print(name)
PY

echo "== images"
RFAKE_BIN="$root/target/debug/rfake" images/build-images.sh "$stage/images" >/dev/null
# The recipes (and the files they name), readable by the test user.
cp -r images "$stage/images-src"
tests/make-oci-fixtures.sh "$stage/images/demo" "$stage/oci" >/dev/null
sif_src=${RFAKE_TEST_SIF_DIR:-$root/../shared/testdata/sif}
if [ -d "$sif_src" ]; then
  cp -r "$sif_src" "$stage/sif"
  (cd "$stage/sif" && sha256sum --quiet -c SHA256SUMS)
fi
# The documents whose console transcripts, option tables and keys
# tests/transcripts.rs checks, with its fixtures and the example job scripts.
mkdir -p "$stage/docs-src/tests" "$stage/docs-src/slurm"
cp -r README.md docs "$stage/docs-src/"
cp -r tests/transcripts "$stage/docs-src/tests/"
cp -r slurm/examples "$stage/docs-src/slurm/"
chmod -R a+rX "$stage/bin" "$stage/images" "$stage/images-src" "$stage/docs-src"

echo "== fake GPU driver (tests/gpu.rs finds it beside bin/)"
tests/gpu/make-fake-driver.sh "$stage/gpu" >/dev/null
[ -d "$stage/sif" ] && chmod -R a+rX "$stage/sif"

echo "== MPI test image (images/mpi/mpi.def, built as $user: cached in $mpi_cache)"
RFAKE_BIN="$root/target/debug/rfake" RFAKE_BUILD_USER="$user" \
  images/mpi/build-mpi-image.sh "$mpi_cache" >/dev/null
install -m 0644 "$mpi_cache/mpi.sqfs" "$stage/mpi.sqfs"
mpich_cache=${RFAKE_MPICH_CACHE:-/var/tmp/rfake-mpich-image}
echo "== MPICH test image (images/mpich/mpich.def, built as $user from the MPI image: cached in $mpich_cache)"
RFAKE_BIN="$root/target/debug/rfake" RFAKE_BUILD_USER="$user" \
  images/mpich/build-mpich-image.sh "$mpich_cache" "$mpi_cache/mpi.sqfs" >/dev/null
install -m 0644 "$mpich_cache/mpich.sqfs" "$stage/mpich.sqfs"
python_cache=${RFAKE_PYTHON_CACHE:-/var/tmp/rfake-python-image}
echo "== Python test image (images/python/python.def, built as $user from the MPI image: cached in $python_cache)"
RFAKE_BIN="$root/target/debug/rfake" RFAKE_BUILD_USER="$user" \
  images/python/build-python-image.sh "$python_cache" "$mpi_cache/mpi.sqfs" >/dev/null
install -m 0644 "$python_cache/python.sqfs" "$stage/python.sqfs"

echo "== test registries (tests/registry/setup.sh)"
trap 'tests/registry/setup.sh stop "$stage" >/dev/null 2>&1 || true' EXIT
RFAKE_REGISTRY_DEBIAN_ROOT="$mpi_cache/rootfs" tests/registry/setup.sh start "$stage" >/dev/null
mapfile -t registry_env <"$stage/registry/env"

echo "== Slurm test cluster, 3 nodes, with rfake's SPANK plugin (spank/)"
# Installed before the start: slurmd reads plugstack.conf when it starts.
slurm_state=${RFAKE_SLURM_DIR:-/var/tmp/rfake-slurm}
make -s -C spank install LIBDIR="$slurm_state/spank" >/dev/null
slurm/cluster.sh start --nodes 3 >/dev/null
trap 'slurm/cluster.sh stop >/dev/null 2>&1 || true; tests/registry/setup.sh stop "$stage" >/dev/null 2>&1 || true' EXIT
slurm_conf=${RFAKE_SLURM_DIR:-/var/tmp/rfake-slurm}/slurm.conf

echo "== tests as $user"
home=$(getent passwd "$user" | cut -d: -f6)
passed=0 failed=0 status=0
while read -r bin; do
  log="$stage/$bin.log"
  set +e
  # From the user's home, as a login shell would: a directory that is
  # bound into the container, so the payload starts where rfake was run.
  (cd "$home" && runuser -u "$user" -- env -i \
      PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
      HOME="$home" USER="$user" LOGNAME="$user" \
      LANG=C.UTF-8 CI="${CI:-}" RUST_BACKTRACE=1 \
      RFAKE_BIN="$stage/bin/rfake" RFAKE_TEST_IMAGES="$stage/images" \
      RFAKE_TEST_SIF_DIR="$stage/sif" RFAKE_TEST_OCI="$stage/oci" \
      RFAKE_TEST_RECIPES="$stage/images-src/recipes" RFAKE_TEST_DOCS="$stage/docs-src" \
      RFAKE_SLURM_CONF="$slurm_conf" RFAKE_MPI_IMAGE="$stage/mpi.sqfs" \
      RFAKE_MPICH_IMAGE="$stage/mpich.sqfs" RFAKE_PYTHON_IMAGE="$stage/python.sqfs" \
      RFAKE_FUZZ_SECONDS="${RFAKE_FUZZ_SECONDS:-20}" RFAKE_FUZZ_DIR="$stage/work/fuzz" \
      "${registry_env[@]}" \
      "$stage/bin/$bin" --test-threads="${RFAKE_TEST_THREADS:-4}") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || status=1
  p=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' | tail -1)
  f=$(grep -Eo '; ([0-9]+) failed' "$log" | grep -Eo '[0-9]+' | tail -1)
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  if [ "$rc" != 0 ] && [ "${f:-0}" = 0 ]; then failed=$((failed + 1)); fi
done <"$stage/test-binaries"

echo "== host prerequisites (root breaks them, $user runs rfake)"
set +e
tests/host-prereqs.sh "$stage/bin/rfake" "$stage/images/demo.sqfs" "$user" | tee "$stage/host-prereqs.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || status=1
p=$(grep -c '^test .* ok$' "$stage/host-prereqs.log" || true)
f=$(grep -c '^test .* FAILED' "$stage/host-prereqs.log" || true)
passed=$((passed + p))
failed=$((failed + f))

echo "== the scale model's self-test (benches/scale-model.py --check, docs/scale.md)"
if python3 benches/scale-model.py --check; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); status=1
fi

echo "== Debian package (packaging/build-deb.sh, then packaging/check-deb.sh as root)"
# A release build (LTO: minutes), the package installed with apt on this
# machine, checked from the installed files only, then removed and purged.
set +e
{
  if packaging/build-deb.sh "$stage/deb" >"$stage/build-deb.log" 2>&1; then
    RFAKE_CHECK_IMAGE="$stage/images/demo.sqfs" packaging/check-deb.sh "$stage"/deb/rfake_*.deb "$user"
  else
    echo "FAIL  packaging/build-deb.sh (its log: $stage/build-deb.log)"
    tail -n 20 "$stage/build-deb.log"
    false
  fi
} 2>&1 | tee "$stage/check-deb.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || status=1
p=$(grep -c '^ok ' "$stage/check-deb.log" || true)
f=$(grep -c '^FAIL ' "$stage/check-deb.log" || true)
if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
passed=$((passed + p))
failed=$((failed + f))

echo
# The transcripts test's own count (tests/transcripts.rs): blocks run,
# passed, failed and marked not runnable.
grep -ho 'transcripts: [0-9]* run, .*' "$stage"/*.log | tail -1 \
  || echo "transcripts: no summary: the transcripts test did not report"
echo "rfake-tests: $passed passed, $failed failed"
exit "$status"
