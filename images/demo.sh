#!/usr/bin/env bash
# Quick start, step 1: set up this host, build rfake and the demo image, and
# run a command in it, showing root inside and the unprivileged user outside.
#
#   As root (fresh Debian 12): installs the Debian packages, makes /dev/fuse
#   usable, creates the unprivileged user rfake-test and runs the demo as it
#   (running it as root would prove nothing about rootless operation).
#   As a user: checks the prerequisites (printing the exact apt-get line when
#   something is missing) and runs the demo as you.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  tests/setup-host.sh
  user=${RFAKE_TEST_USER:-rfake-test}
  out=/var/tmp/rfake-demo
else
  user=$(id -un)
  out=$(pwd)/target/demo
  missing=()
  command -v squashfuse_ll >/dev/null || command -v squashfuse >/dev/null || missing+=(squashfuse fuse3)
  command -v mksquashfs >/dev/null || missing+=(squashfs-tools)
  pkg-config --exists fuse3 2>/dev/null || missing+=(libfuse3-dev pkg-config)
  pkg-config --exists libsquashfs1 2>/dev/null || missing+=(libsquashfs-dev libclang-dev)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v python3 >/dev/null || missing+=(python3)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "demo: missing packages; an admin must run:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  if ! [ -r /dev/fuse ] || ! [ -w /dev/fuse ]; then
    echo "demo: /dev/fuse is not usable by users; an admin must run: chmod 0666 /dev/fuse" >&2
    exit 1
  fi
fi

echo "== building rfake (cargo build --release)"
cargo build --release --locked --quiet
echo "== building the demo image into $out"
images/build-images.sh "$out" >/dev/null 2>&1
install -m 0755 target/release/rfake "$out/rfake"
chmod -R a+rX "$out"

run_as() {
  if [ "$(id -un)" = "$1" ]; then shift; "$@"; else runuser -u "$1" -- "${@:2}"; fi
}

echo "== as $user: rfake exec $out/demo.sqfs ..."
run_as "$user" env -C /tmp bash -c '
  rfake=$1 img=$2
  "$rfake" exec "$img" sh -c "echo \"inside:  \$(id)\"; echo \"         \$(head -n1 /etc/os-release)\"; sleep 1" &
  pid=$!
  sleep 0.5
  echo "outside: the same processes, seen from the host:"
  ps -o user:16=,pid=,args= -p "$pid" | sed "s/^/         /"
  ps -o user:16=,pid=,args= --ppid "$pid" | sed "s/^/         /"
  wait "$pid"
  echo "exit status: $?"
' demo "$out/rfake" "$out/demo.sqfs"
