#!/usr/bin/env bash
# The per-node inputs of the launch-at-scale model (docs/scale.md), counted:
# N ranks (default 1, 4 and 16) of one image started at once on this node,
# sharing one container by --join-key as they would under a launcher, each
# under strace -ff; then what the traces and the page cache say. A benchmark,
# not a test.
#
#   benches/scale-measure.sh [IMAGE [N... [-- COMMAND...]]]     # as root (see below)
#
# Runs as root only to drop the test user's privileges itself (setpriv, no
# PAM session) and to evict and count the page cache of the copy; every
# traced process runs as RFAKE_USER (default rfake-test). Per N it copies IMAGE to a fresh file (a new inode: no warm
# mount or page cache of an earlier run is reused), evicts the copy from the
# page cache (POSIX_FADV_DONTNEED after fsync), launches N ranks, each under
# strace -ff, with PMIX_RANK set (so they keep the caller's uid and look the user up, as under
# any launcher) and `--join-key`, and waits for every process, the warm
# mount's keeper (lingering warm_linger, 5 s) included. MODE=no-join runs
# the same with --no-join (a container per rank), MODE=ch-run with
# Charliecloud's `ch-run IMAGE -- COMMAND` (a SquashFUSE mount per rank; USER
# set, which it needs), for comparison. COMMAND
# (default `true`) is what each rank runs in the container.
# benches/scale-count.py reads the traces and prints one row per N.
#
# Environment: RFAKE_BIN (default target/debug/rfake; the syscalls counted
# are the same in a release build), RFAKE_USER, MODE (join|no-join),
# OUT (default /var/tmp/rfake-h-scale).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
image=$(realpath "${1:-/var/tmp/rfake-static/images/demo.sqfs}")
shift || true
counts=()
while [[ $# -gt 0 && $1 != -- ]]; do counts+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
payload=("$@")
[[ ${#payload[@]} -gt 0 ]] || payload=(true)
[[ ${#counts[@]} -gt 0 ]] || counts=(1 4 16)
user=${RFAKE_USER:-rfake-test}
mode=${MODE:-join}
case $mode in join | no-join | ch-run) ;; *) echo "scale-measure.sh: MODE is join, no-join or ch-run" >&2; exit 2 ;; esac
out=${OUT:-/var/tmp/rfake-h-scale}
[[ $(id -u) == 0 ]] || { echo "scale-measure.sh: run as root (it drops to $user itself)" >&2; exit 2; }
command -v strace >/dev/null || { echo "scale-measure.sh: needs strace (apt-get install strace)" >&2; exit 2; }
uid=$(id -u "$user"); gid=$(id -g "$user")
mkdir -p "$out"; chmod 0755 "$out"
bin=$out/bin; mkdir -p "$bin"; chmod 0755 "$bin"
install -m 0755 "${RFAKE_BIN:-$top/target/debug/rfake}" "$bin/rfake"
home=$out/home; rm -rf "$home"; mkdir -p "$home"; chown "$uid:$gid" "$home"
# Take the rendezvous secret out of the count: made once per user, not per launch.
setpriv --reuid="$uid" --regid="$gid" --clear-groups env -i HOME="$home" PATH=/usr/bin:/bin \
  "$bin/rfake" exec --join-key warmup "$image" true

for n in "${counts[@]}"; do
  run=$out/$mode-$n
  rm -rf "$run"; mkdir -p "$run"; chown "$uid:$gid" "$run"
  img=$run/image.sqfs
  cp "$image" "$img"; chown "$uid:$gid" "$img"; chmod 0644 "$img"
  python3 -c 'import os,sys
fd=os.open(sys.argv[1],os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)' "$img"
  before=$(fincore --bytes --noheadings --output RES "$img")
  extra_env=()
  case $mode in
    join) launch=("$bin/rfake" exec "--join-key=scale-$n-$$" "$img") ;;
    no-join) launch=("$bin/rfake" exec --no-join "$img") ;;
    ch-run) launch=(ch-run "$img" --) extra_env=(USER="$user") ;;
  esac
  # One strace per rank, detaching at a process's execve: the payload runs
  # from the image, and strace reading the memory of a process whose pages
  # come from the FUSE mount, while it holds the image server's threads
  # stopped, deadlocks. rfake's own processes (the ranks, the keepers, the
  # image server) never exec, and stay traced.
  setpriv --reuid="$uid" --regid="$gid" --clear-groups \
    env -i HOME="$home" PATH=/usr/bin:/bin LANG=C.UTF-8 "${extra_env[@]}" \
    sh -c 'n=$1; out=$2; shift 2; i=0
      while [ $i -lt $n ]; do
        PMIX_RANK=$i strace -ff -qq -y -s 0 --detach-on=execve -o "$out/trace" \
          -e trace=%file,%desc,%process,%network,%memory "$@" &
        i=$((i + 1))
      done; wait' \
    sh "$n" "$run" "${launch[@]}" "${payload[@]}"
  after=$(fincore --bytes --noheadings --output RES "$img")
  echo "$n $before $after $(stat -c %s "$img")" >"$run/fincore"
done
python3 "$top/benches/scale-count.py" --image-dir "$out" --home "$home" "${counts[@]/#/$out/$mode-}"
