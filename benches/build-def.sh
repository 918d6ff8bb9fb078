#!/usr/bin/env bash
# Definition-file build benchmark (issue 12): `rfake build` of a Debian image
# whose %post runs `apt-get install` of a mid-size package set, against the same
# steps through rootless `podman build`; and the time the fakeroot filter adds
# to that %post (`--fakeroot-mode seccomp` against `none`). A benchmark, not a
# test: it measures and reports ("met"/"NOT met" next to the targets do not
# change the exit status).
#
#   sudo benches/build-def.sh [--runs N] [--out DIR] [--packages "P1 P2..."]
#                             [--podman-driver D] [--podman-isolation I]
#                             [--also-compress ALG]...
#
# Run as root: it prepares the inputs (a package repository, the base) and
# installs what it needs when missing (podman, apt-utils for apt-ftparchive,
# python3, with apt-get: benches are not CI). Everything measured runs as the
# unprivileged user rfake-test (RFAKE_BENCH_USER), through runuser, in a clean
# environment, in STAGE (RFAKE_BENCH_STAGE, default /var/tmp/rfake-bench-build-def),
# which is removed at the end with everything in it (podman's storage, the
# images, the repository); the repository's web server and podman's pause
# process are ended by their pids.
#
# Inputs, made once per invocation, not timed:
#   - the base: the Debian 12 root (RFAKE_BENCH_DEBIAN_ROOT, default
#     /var/tmp/rfake-mpi-image/rootfs) as one tarball without its device nodes,
#     FIFOs and sockets (rfake leaves them out of a base anyway); from it, as
#     the user, `rfake build base.sif base.tar` (rfake's side: Bootstrap:
#     localimage) and `podman import base.tar` (podman's side: FROM);
#   - the packages (--packages, default "build-essential python3 python3-venv",
#     --no-install-recommends: 70 packages, 85 MB of .debs, 347 MB installed
#     on the default base): resolved and downloaded once from the base's own
#     sources (deb.debian.org) by `apt-get install --download-only` in a chroot
#     into a copy of the base, made into a flat repository (apt-ftparchive
#     packages + release) and served by `python3 -m http.server` on
#     127.0.0.1:PORT (RFAKE_BENCH_REPO_PORT, default 38080) as the user. So no
#     timed run touches the internet, every run installs the same versions, and
#     `apt-get update` reads one small index instead of the mirror's.
#
# The steps, one shell script (post.sh) for all sides: point apt at the
# loopback repository only, `apt-get update`, `apt-get install -y
# --no-install-recommends PACKAGES`, `apt-get clean`, remove the lists; it
# prints the wall clock at its start and end, which splits each run into
# "base" (before the step), "step" and "write" (after it). apt runs with
# `-o APT::Sandbox::User=root` everywhere, so the same script runs with
# --fakeroot-mode none (rfake's seccomp mode sets the same itself).
#
# The lines, each run in every round; the order is reversed every other round
# (A B C..., then ...C B A), as the machine is noisy:
#   rfake seccomp   rfake build OUT.sif bench.def   (Bootstrap: localimage, From: base.sif;
#                   %post: post.sh; the default --fakeroot-mode seccomp). Writes a SIF:
#                   a gzip SquashFS, 128 KiB blocks, of the whole tree (base + packages).
#   podman          podman --root R --runroot RR --storage-driver overlay build --no-cache
#                   --network host --isolation chroot -t OUT -f Containerfile CTX
#                   (FROM the imported base; RUN --mount=type=bind,source=post.sh,...
#                   sh -e post.sh). Writes an image into podman's local storage: the new
#                   layer, uncompressed. --network host: the repository is on the host's
#                   loopback, as for rfake's %post. --isolation chroot: on a host with
#                   hybrid cgroups (v1 + v2, as the development VM) crun refuses to start
#                   an OCI container ("cgroups in hybrid mode not supported");
#                   --podman-isolation oci where it works.
#   rfake none      rfake build --fakeroot-mode none OUT.sif bench.def
#   rfake ALG       rfake build --compress ALG ... (informational, per --also-compress)
# The image each run wrote is removed before the next run (not timed). The
# page cache is warm for all (a check run of each line comes first).
#
# Targets (one summary line each, medians of the per-round ratios):
#   rfake seccomp / podman, whole build wall time: <= 1.0
#   rfake seccomp / rfake none, the step's (%post) wall time: <= 1.05
#
# Output in target/bench (or --out DIR): build-def-STAMP.txt (the summary),
# build-def-STAMP/ (runs.tsv: one line per run; each run's log; the check
# runs' logs, rfake -v), build-def-latest.txt.
#   benches/build-def.sh --summary DIR   prints the summary of DIR (a
# build-def-STAMP directory) again, from its runs.tsv; no root needed.
# Environment: RFAKE_BIN (default target/release/rfake), RFAKE_BENCH_RUNS
# (rounds, default 5; --runs wins), RFAKE_BENCH_STAGE, RFAKE_BENCH_USER,
# RFAKE_BENCH_DEBIAN_ROOT, RFAKE_BENCH_REPO_PORT.
# Exit status: 0 when measured; 2 when something needed is missing or not run
# as root; 1 on other errors (a check run that fails, a failed timed run).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${RFAKE_BENCH_RUNS:-5} out=target/bench
packages="build-essential python3 python3-venv"
podman_driver=overlay podman_isolation=chroot
also_compress=() summary_only=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --packages) packages=$2; shift 2 ;;
    --podman-driver) podman_driver=$2; shift 2 ;;
    --podman-isolation) podman_isolation=$2; shift 2 ;;
    --also-compress) also_compress+=("$2"); shift 2 ;;
    --summary) summary_only=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-def.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
die2() { echo "build-def.sh: $*" >&2; exit 2; }
die1() { echo "build-def.sh: $*" >&2; exit 1; }
say() { echo "build-def.sh: $*" >&2; }
# summarize DIR: the header the run wrote, then the tables from its runs.tsv.
summarize() {
  cat "$1/header.txt"
  echo
  python3 - "$1/runs.tsv" <<'PY'
import statistics as st, sys
path = sys.argv[1]
rows = [l.rstrip("\n").split("\t") for l in open(path)][1:]
names = list(dict.fromkeys(r[1] for r in rows))
runs = {}  # name -> list of (round, wall, base, step, write, cpu)
for r in rows:
    rnd = int(r[0])
    if rnd == 0:
        continue
    t0, t1, s, e, u, sy = (float(x) for x in r[3:9])
    runs.setdefault(r[1], []).append((rnd, t1 - t0, s - t0, e - s, t1 - e, u + sy))
def med(xs): return st.median(xs)
def spread(xs): return f"{min(xs):.1f}-{max(xs):.1f}"
print("## per line: median (min-max) over the rounds, seconds")
print(f"  {'line':16s} {'wall':>18s} {'base':>16s} {'step':>16s} {'write':>16s} {'CPU u+s':>16s}")
for n in names:
    v = runs[n]
    cols = [[x[k] for x in v] for k in range(1, 6)]
    print(f"  {n:16s} " + " ".join(f"{med(c):7.1f} ({spread(c):>9s})" for c in cols))
print("  (base: from the start to the step's first line: reading the base, writing it out;")
print("   step: the %post / RUN script itself; write: from the step's end to the exit:")
print("   rfake writing the SquashFS and the SIF, podman committing the layer)")
print()
print("## per round, wall seconds")
for n in names:
    print(f"  {n:16s} " + "  ".join(f"{w:6.1f}" for _, w, *_ in sorted(runs[n])))
print()
def ratio(a, b, k, label, target):
    pa = {x[0]: x[k] for x in runs[a]}
    pb = {x[0]: x[k] for x in runs[b]}
    rs = [pa[r] / pb[r] for r in sorted(pa) if r in pb]
    m = med(rs)
    note = "" if target is None else f"  target <= {target}: {'met' if m <= target else 'NOT met'}"
    print(f"  {label:44s} {m:.3f} (range {min(rs):.3f}-{max(rs):.3f}, {len(rs)} rounds: "
          + " ".join(f"{x:.3f}" for x in rs) + f"){note}")
    return m, min(rs), max(rs), len(rs)
print("## ratios of the same round's runs, median (range)")
a = ratio("rfake seccomp", "podman", 1, "rfake seccomp / podman, wall", 1.0)
ratio("rfake seccomp", "podman", 3, "rfake seccomp / podman, step only", None)
ratio("rfake seccomp", "podman", 5, "rfake seccomp / podman, CPU", None)
b = ratio("rfake seccomp", "rfake none", 3, "rfake seccomp / rfake none, step (%post)", 1.05)
ratio("rfake seccomp", "rfake none", 1, "rfake seccomp / rfake none, wall", None)
for n in names[3:]:
    ratio(n, "rfake seccomp", 1, f"{n} / rfake seccomp, wall", None)
    ratio(n, "podman", 1, f"{n} / podman, wall", None)
print()
for label, (m, lo, hi, k), t in [
        ("rfake build / podman build, wall", a, 1.0),
        ("fakeroot filter: %post seccomp / none", b, 1.05)]:
    print(f"SUMMARY {label}: {m:.3f} (range {lo:.3f}-{hi:.3f}, {k} rounds), target <= {t}: "
          + ("met" if m <= t else "NOT met"))
PY

}
if [ -n "$summary_only" ]; then summarize "$summary_only"; exit 0; fi
[[ $runs =~ ^[1-9][0-9]*$ ]] || die2 "--runs $runs: not a positive number"
[ "$(id -u)" = 0 ] || die2 "run as root (it prepares the inputs; the measurements run as ${RFAKE_BENCH_USER:-rfake-test})"
rfake=${RFAKE_BIN:-target/release/rfake}
[ -x "$rfake" ] || die2 "$rfake missing: cargo build --release (or set RFAKE_BIN)"
user=${RFAKE_BENCH_USER:-rfake-test}
home=$(getent passwd "$user" | cut -d: -f6) || die2 "no user $user"
grep -q "^$user:" /etc/subuid || die2 "$user has no subuid range in /etc/subuid: rootless podman build needs one"
root_src=${RFAKE_BENCH_DEBIAN_ROOT:-/var/tmp/rfake-mpi-image/rootfs}
[ -x "$root_src/usr/bin/apt-get" ] || die2 "$root_src: not a Debian root with apt-get (RFAKE_BENCH_DEBIAN_ROOT)"
stage=${RFAKE_BENCH_STAGE:-/var/tmp/rfake-bench-build-def}
port=${RFAKE_BENCH_REPO_PORT:-38080}

# What the bench needs on the host, installed when missing.
need=()
command -v podman >/dev/null || need+=(podman)
command -v apt-ftparchive >/dev/null || need+=(apt-utils)
command -v python3 >/dev/null || need+=(python3)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
for tool in runuser chroot tar; do command -v "$tool" >/dev/null || die2 "$tool missing"; done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
res=$(cd "$out" && pwd)/build-def-$stamp
mkdir -p "$res"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Run as the user, in a clean environment, from its home. Podman's runtime
# directory (its pause process's pid file) and temporary files are in STAGE.
as_user() {
  (cd "$home" && runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 XDG_RUNTIME_DIR="$stage/xdg" \
    TMPDIR="$stage/w/tmp" "$@")
}

# --- Cleanup: the web server and podman's pause process by their pids, then
# the whole stage (root removes the subuid-owned files of podman's storage too).
http_pid=
cleanup() {
  local rc=$? pid
  if [ -n "$http_pid" ]; then kill "$http_pid" 2>/dev/null || true; fi
  if [ -d "$stage/w/podman" ]; then
    as_user "${podman[@]}" rmi -a -f >/dev/null 2>&1 || true
  fi
  for f in "$stage/xdg/libpod/tmp/pause.pid" "$stage/xdg/libpod/pause.pid"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    # only if it is still the user's podman pause process
    if [ "$(stat -c %U "/proc/$pid" 2>/dev/null)" = "$user" ] && grep -q podman "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  rm -rf "$stage"
  exit "$rc"
}
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/w/tmp" "$stage/w/ctx" "$stage/xdg" "$stage/repo"
podman=(podman --root "$stage/w/podman/root" --runroot "$stage/w/podman/run" --storage-driver "$podman_driver")
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 0755 "$stage" "$stage/bin" "$stage/repo"
chown "$user:" "$stage/w" "$stage/w/tmp" "$stage/w/ctx" "$stage/xdg"
chmod 0700 "$stage/xdg"
install -m 0755 "$rfake" "$stage/bin/rfake"
R=$stage/bin/rfake W=$stage/w

# --- The package repository: resolved and downloaded once, from the base's own
# sources, in a chroot into a copy of the base (as root: apt's own sandbox user
# works there).
say "downloading $packages into a loopback repository"
seed=$stage/seed
cp -a "$root_src" "$seed"
cp -L /etc/resolv.conf "$seed/etc/resolv.conf"
# apt's sandboxed helpers write to /dev/null: a root without the device (an
# image rfake built, unpacked; a /dev/null some chroot wrote as a plain file)
# makes apt-key report gpgv missing.
for d in null:1:3 zero:1:5 random:1:8 urandom:1:9; do
  IFS=: read -r n ma mi <<<"$d"
  [ -c "$seed/dev/$n" ] || { rm -f "$seed/dev/$n"; mknod -m 0666 "$seed/dev/$n" c "$ma" "$mi"; }
done
rm -f "$seed"/var/cache/apt/archives/*.deb
chroot "$seed" apt-get -q update >"$res/repo-download.log" 2>&1 \
  || { tail "$res/repo-download.log" >&2; die1 "apt-get update in the copy of $root_src failed"; }
# shellcheck disable=SC2086 # the package list is words
chroot "$seed" apt-get -q install --download-only -y --no-install-recommends $packages >>"$res/repo-download.log" 2>&1 \
  || { tail "$res/repo-download.log" >&2; die1 "downloading $packages failed"; }
mv "$seed"/var/cache/apt/archives/*.deb "$stage/repo/"
rm -rf "$seed"
(cd "$stage/repo" && apt-ftparchive packages . >Packages && apt-ftparchive release . >../Release && mv ../Release .)
chmod -R a+rX "$stage/repo"
n_debs=$(find "$stage/repo" -name '*.deb' | wc -l)
debs_bytes=$(du -cb "$stage"/repo/*.deb | tail -1 | cut -f1)
installed=$(grep -h 'After this operation' "$res/repo-download.log" | tail -1 || true)

# The web server, as the user; its pid is the python's (exec), killed at the end.
as_user sh -c "echo \$\$ >$W/http.pid; exec python3 -m http.server --bind 127.0.0.1 --directory $stage/repo $port" \
  >"$res/http.log" 2>&1 &
for _ in $(seq 50); do
  [ -s "$W/http.pid" ] && python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/Release', timeout=1)" 2>/dev/null && break
  sleep 0.2
done
http_pid=$(cat "$W/http.pid" 2>/dev/null || true)
python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/Release', timeout=1)" 2>/dev/null \
  || die1 "the repository's web server on 127.0.0.1:$port does not answer (see $res/http.log; RFAKE_BENCH_REPO_PORT)"

# --- The base, one tarball for both sides.
say "making the base"
(cd "$root_src" && find . -mindepth 1 ! -type b ! -type c ! -type p ! -type s -print0 \
  | tar --null --no-recursion -T - --numeric-owner -cf "$stage/base.tar")
chmod 0644 "$stage/base.tar"
as_user "$R" build -q "$W/base.sif" "$stage/base.tar" >"$res/base-rfake.log" 2>&1 \
  || { cat "$res/base-rfake.log" >&2; die1 "rfake build of the base failed"; }
as_user "${podman[@]}" import -q "$stage/base.tar" localhost/rfake-bench-base >"$res/base-podman.log" 2>&1 \
  || { cat "$res/base-podman.log" >&2; die1 "podman import of the base failed"; }
rm -f "$stage/base.tar"

# --- The steps: post.sh, the definition file and the Containerfile.
cat >"$W/ctx/post.sh" <<EOF
echo "BENCH-STEP-START \$(date +%s.%N)"
echo 'deb [trusted=yes] http://127.0.0.1:$port ./' >/etc/apt/sources.list
rm -f /etc/apt/sources.list.d/*
apt-get -q -o APT::Sandbox::User=root update
apt-get -q -o APT::Sandbox::User=root install -y --no-install-recommends $packages >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*
echo "BENCH-STEP-END \$(date +%s.%N)"
EOF
{ printf 'Bootstrap: localimage\nFrom: %s\n\n%%post\n' "$W/base.sif"; sed 's/^/    /' "$W/ctx/post.sh"; } >"$W/bench.def"
printf '%s\n' 'FROM localhost/rfake-bench-base' \
  'RUN --mount=type=bind,source=post.sh,target=/tmp/bench-post.sh sh -e /tmp/bench-post.sh' >"$W/ctx/Containerfile"
chown "$user:" "$W/bench.def" "$W/ctx/post.sh" "$W/ctx/Containerfile"
cp "$W/bench.def" "$W/ctx/Containerfile" "$res/"

# timed.sh LOG CMD...: run CMD with its output in LOG; print rc, the wall clock
# before and after, and /usr/bin/time's wall, user and system seconds (the
# children's included).
cat >"$stage/bin/timed.sh" <<'EOF'
#!/bin/sh
log=$1; shift
t0=$(date +%s.%N)
/usr/bin/time -o "$log.time" -f '%e %U %S' "$@" >"$log" 2>&1; rc=$?
t1=$(date +%s.%N)
echo "$rc $t0 $t1 $(tail -1 "$log.time")"
EOF
chmod 0755 "$stage/bin/timed.sh"

# --- The lines.
names=("rfake seccomp" "podman" "rfake none")
cmds=(
  "$R build $W/out.sif $W/bench.def"
  "${podman[*]} build --no-cache --network host --isolation $podman_isolation -t localhost/rfake-bench-out -f $W/ctx/Containerfile $W/ctx"
  "$R build --fakeroot-mode none $W/out.sif $W/bench.def"
)
for alg in "${also_compress[@]}"; do
  names+=("rfake $alg")
  cmds+=("$R build --compress $alg $W/out.sif $W/bench.def")
done
# Before each run (not timed): no output of an earlier run.
prep() {
  rm -f "$W/out.sif"
  as_user "${podman[@]}" rmi -f localhost/rfake-bench-out >/dev/null 2>&1 || true
}
steps_of() {  # LOG: "START END" of the step, or fail
  local s e
  s=$(sed -n 's/.*BENCH-STEP-START \([0-9.]*\).*/\1/p' "$1" | head -1)
  e=$(sed -n 's/.*BENCH-STEP-END \([0-9.]*\).*/\1/p' "$1" | head -1)
  [ -n "$s" ] && [ -n "$e" ] && echo "$s $e"
}
run_line() {  # INDEX ROUND LOGNAME: one timed run, a line in runs.tsv
  local i=$1 round=$2 log=$W/$3.log t se
  prep
  t=$(as_user "$stage/bin/timed.sh" "$log" sh -c "${cmds[$i]}")
  cp "$log" "$res/$3.log"
  set -- $t
  [ "$1" = 0 ] || { tail -20 "$log" >&2; die1 "${names[$i]}: exit status $1 (log: $res/$3.log)"; }
  se=$(steps_of "$log") || { tail -20 "$log" >&2; die1 "${names[$i]}: no start and end lines of the step in its log ($res/$3.log)"; }
  # shellcheck disable=SC2086 # $se is two words
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "${names[$i]}" "$1" "$2" "$3" $se "$5" "$6" >>"$res/runs.tsv"
}

# --- Check runs (round 0, not in the summary): each line once; rfake with -v.
say "check runs"
printf 'round\tline\trc\tt0\tt1\tstep_start\tstep_end\tuser_s\tsys_s\n' >"$res/runs.tsv"
cmds[0]="$R -v build $W/out.sif $W/bench.def"
for i in "${!names[@]}"; do
  run_line "$i" 0 "check-$i"
  case $i in
    0)
      rfake_line=$(grep -h '^rfake build: wrote' "$W/check-0.log" || true)
      sif_bytes=$(stat -c %s "$W/out.sif")
      check_exec=$(as_user "$R" exec "$W/out.sif" sh -c 'gcc --version | head -1; python3 --version' 2>&1 | tr '\n' ' ') ;;
    1)
      podman_bytes=$(as_user "${podman[@]}" image inspect --format '{{.Size}}' localhost/rfake-bench-out) ;;
  esac
done
cmds[0]="$R build $W/out.sif $W/bench.def"

# --- The rounds.
for round in $(seq "$runs"); do
  order=("${!names[@]}")
  if [ $((round % 2)) = 0 ]; then
    for ((a = 0, b = ${#order[@]} - 1; a < b; a++, b--)); do t=${order[a]}; order[a]=${order[b]}; order[b]=$t; done
  fi
  for i in "${order[@]}"; do
    say "round $round of $runs: ${names[$i]}"
    run_line "$i" "$round" "round$round-$i"
  done
done
prep

# --- The summary.
{
  echo "# benches/build-def.sh, $stamp"
  echo "host: $(uname -r), $(nproc) CPUs; load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rfake: $("$R" --version 2>/dev/null | head -1) ($rfake), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "tools: $(podman --version) (rootless as $user, storage $podman_driver, isolation $podman_isolation), $(apt-get --version | head -1)"
  echo "base: $root_src as a tarball (no device nodes); rfake: base.sif (Bootstrap: localimage), podman: podman import"
  echo "packages: $packages (--no-install-recommends): $n_debs .debs, $debs_bytes bytes, served on 127.0.0.1:$port; ${installed:-installed size unknown}"
  echo "outputs: rfake $sif_bytes bytes (SIF, gzip SquashFS): $rfake_line"
  echo "         podman $podman_bytes bytes (image in local storage, uncompressed: podman image inspect .Size)"
  echo "check: rfake exec OUT.sif gcc --version, python3 --version: $check_exec"
  echo "rounds: $runs (order reversed every other round); user $user"
} >"$res/header.txt"
summarize "$res" >"$res.txt"
cp "$res.txt" "$out/build-def-latest.txt"
cat "$res.txt"
