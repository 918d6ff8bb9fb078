#!/usr/bin/env bash
# Pull benchmark (issue 11): rfake pulling from a registry, against the tools
# a user would otherwise use, on the same registry and image in the same run.
# A benchmark, not a test: it measures and reports ("met"/"NOT met" next to
# the targets do not change the exit status).
#
#   sudo benches/pull.sh [--rounds N] [--runs N] [--exec-runs N] [--out DIR]
#
# Run as root: it starts its own pair of test registries
# (tests/registry/setup.sh start STAGE, on ports 35000 and 35443 unless
# RFAKE_REGISTRY_PORT / RFAKE_REGISTRY_TLS_PORT say otherwise) and stops them
# on exit. Everything measured runs as the unprivileged user rfake-test
# (RFAKE_BENCH_USER), through runuser, in STAGE/work. The image is the
# repository bench/debian:12 of the plain registry: the Debian 12 root as
# three gzip layers (~80 MB compressed, ~260 MB unpacked).
#
# What is measured, each --rounds times (the order of the commands reversed
# every other round, as the VM is noisy); every run starts from nothing
# (hyperfine --prepare removes the cache and the outputs):
#
#   1  pull (hyperfine, --runs per command and round):
#        rfake pull        RFAKE_CACHEDIR=fresh rfake pull -q OUT.sqfs docker://REG/bench/debian:12
#        skopeo + build    skopeo copy --src-tls-verify=false docker://... oci:DIR:12
#                          && rfake build --skip-special OUT.sqfs DIR
#        podman pull       podman --root X --runroot Y --storage-driver vfs pull
#                          --tls-verify=false docker://...   (rootless, as the user)
#        skopeo copy       the copy alone (informational)
#        rfake build       the conversion alone, from a kept OCI layout (informational)
#      Targets: rfake pull <= 0.8 x skopeo + build, <= 1.0 x podman pull.
#      (rfake pull leaves the device nodes of the layers out by itself;
#      rfake build needs --skip-special for that.)
#   2  a launch of the pulled image (hyperfine, --exec-runs, 3 warm-up runs),
#      the cache warm (the image pulled and converted before), twice: with
#      warm mounts on (warm_linger = 5, the default) and off (warm_linger = 0),
#      the same setting on every line:
#        file              rfake exec CACHE/images/sha256/DIGEST.sqfs true  (the converted file)
#        digest            rfake exec docker://REG/bench/debian@DIGEST true (never asked again)
#        tag, fresh        rfake exec docker://REG/bench/debian:12 true: the tag's record is
#                          younger than TAG_FRESH (60 s), so the registry is not asked
#        tag, stale        the same, with the record made 120 s old before each run: the
#                          manifest is asked again (one request), the image found converted
#      Every line has the same --prepare (a python3 rewriting the record's time: 30 s ago,
#      or 120 s ago for "stale"). Target: docker:// <= 1.1 x file.
#   3  peak disk use of a fresh rfake pull (cache and output in one directory): every
#      20 ms, the allocated blocks of the files under it plus those of files the user's
#      processes hold open there (unlinked and O_TMPFILE ones included), against the
#      compressed layers plus the output's size. Target: peak <= layers + output. The
#      same for a first rfake exec docker://... true (the cache only; its output is the
#      image in the cache) and for skopeo + build, for comparison.
#
# Inputs (the defaults are the test host's): RFAKE_REGISTRY_OCI
# (/var/tmp/rfake-static/oci), RFAKE_REGISTRY_SIF
# (/var/tmp/rfake-static/images/demo.sif), RFAKE_REGISTRY_DEBIAN_ROOT
# (/var/tmp/rfake-mpi-image/rootfs); see tests/registry/setup.sh.
# Environment: RFAKE_BIN (default target/release/rfake), RFAKE_BENCH_STAGE
# (default /var/tmp/rfake-bench-pull), RFAKE_BENCH_USER (default rfake-test).
#
# Output in target/bench (or --out DIR): pull-STAMP.txt (the summary:
# per-round medians, ratios, their median and range), pull-STAMP/ (hyperfine's
# JSON per round, the peak-disk lines, rfake -v pull of the first round),
# pull-latest.txt.
# Exit status: 0 when measured; 2 when something needed is missing or not run
# as root; 1 on other errors.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

rounds=3 runs=3 exec_runs=30 out=target/bench
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --exec-runs) exec_runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "pull.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die2() { echo "pull.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die2 "run as root (it starts the registries; the measurements run as ${RFAKE_BENCH_USER:-rfake-test})"
rfake=${RFAKE_BIN:-target/release/rfake}
[ -x "$rfake" ] || die2 "$rfake missing: cargo build --release (or set RFAKE_BIN)"
for tool in hyperfine skopeo podman python3 runuser docker-registry; do
  command -v "$tool" >/dev/null || die2 "$tool missing (apt-get install hyperfine skopeo podman python3 docker-registry)"
done
user=${RFAKE_BENCH_USER:-rfake-test}
home=$(getent passwd "$user" | cut -d: -f6) || die2 "no user $user"
stage=${RFAKE_BENCH_STAGE:-/var/tmp/rfake-bench-pull}
export RFAKE_REGISTRY_PORT=${RFAKE_REGISTRY_PORT:-35000}
export RFAKE_REGISTRY_TLS_PORT=${RFAKE_REGISTRY_TLS_PORT:-35443}
export RFAKE_REGISTRY_OCI=${RFAKE_REGISTRY_OCI:-/var/tmp/rfake-static/oci}
export RFAKE_REGISTRY_SIF=${RFAKE_REGISTRY_SIF:-/var/tmp/rfake-static/images/demo.sif}
export RFAKE_REGISTRY_DEBIAN_ROOT=${RFAKE_REGISTRY_DEBIAN_ROOT:-/var/tmp/rfake-mpi-image/rootfs}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
res=$(cd "$out" && pwd)/pull-$stamp
mkdir -p "$res"

# --- The registries, the binary, the user's work directory.
cleanup() {
  tests/registry/setup.sh stop "$stage" || true
}
trap cleanup EXIT
tests/registry/setup.sh start "$stage"
# shellcheck disable=SC1091
. "$stage/registry/env"
reg=$RFAKE_TEST_REGISTRY
digest=$RFAKE_TEST_REGISTRY_DIGEST_DEBIAN_12
layers_bytes=$(( ${RFAKE_TEST_REGISTRY_SIZES_DEBIAN//,/+} ))
ref=docker://$reg/bench/debian:12
dref=docker://$reg/bench/debian@$digest

mkdir -p "$stage/bin"
chmod 0755 "$stage" "$stage/bin"
install -m 0755 "$rfake" "$stage/bin/rfake"
R=$stage/bin/rfake
W=$stage/work
rm -rf "$W"
mkdir -p "$W/check"
chown "$user:" "$W" "$W/check"
cat >"$stage/bin/age-record.py" <<'PY'
# age-record.py CACHE REF-PATH SECONDS: make a reference record SECONDS old.
import json, os, sys, time
path = os.path.join(sys.argv[1], "refs", sys.argv[2])
rec = json.load(open(path))
rec["pulled"] = int(time.time()) - int(sys.argv[3])
tmp = path + ".bench"
with open(tmp, "w") as f:
    json.dump(rec, f)
os.rename(tmp, path)
PY
cat >"$stage/bin/peak-disk.py" <<'PY'
# peak-disk.py DIR CMD...: run CMD; every 20 ms add up the allocated blocks of
# the files under DIR and of the files under DIR that this user's processes
# hold open (unlinked ones and O_TMPFILE ones too), each inode once. Prints
# the peak and the wall time.
import os, stat, subprocess, sys, time
d = os.path.realpath(sys.argv[1]); cmd = sys.argv[2:]
uid = os.getuid()
def alloc():
    seen, tot = set(), 0
    def add(st):
        nonlocal tot
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino)); tot += st.st_blocks * 512
    for pid in os.listdir("/proc"):
        if not pid.isdigit(): continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid: continue
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError: continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if not link.startswith(d + "/"): continue
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                if stat.S_ISREG(st.st_mode): add(st)
            except OSError: pass
    for top, dirs, files in os.walk(d):
        for n in files:
            try: add(os.lstat(os.path.join(top, n)))
            except OSError: pass
    return tot
t0 = time.time()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
peak = 0
while p.poll() is None:
    peak = max(peak, alloc()); time.sleep(0.02)
t = time.time() - t0
peak = max(peak, alloc())
print(f"rc={p.returncode} wall_s={t:.2f} peak_bytes={peak} final_bytes={alloc()}")
PY
chmod 0644 "$stage/bin/"*.py
# warm mounts on (the default) and off; an empty site file
printf 'warm_linger = 5\n' >"$stage/bin/warm.toml"
printf 'warm_linger = 0\n' >"$stage/bin/cold.toml"
: >"$stage/bin/site.toml"
chmod 0644 "$stage/bin/"*.toml

# Run as the user, in a clean environment, from its home.
as_user() {
  (cd "$home" && runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 RFAKE_CONFIG="$stage/bin/site.toml" "$@")
}

# --- A check run of each, which also warms the registry's files in the page cache.
echo "pull.sh: check runs" >&2
timed="TIMEFORMAT='time: wall %R s, user %U s, sys %S s'; time"
as_user env RFAKE_CACHEDIR="$W/check/cache" bash -c "$timed $R -v pull $W/check/out.sqfs $ref" \
  >"$res/rfake-v-pull.txt" 2>&1 || { cat "$res/rfake-v-pull.txt" >&2; exit 1; }
as_user skopeo copy -q --src-tls-verify=false "$ref" "oci:$W/oci-kept:12"
as_user bash -c "$timed $R -v build --skip-special $W/check/build.sqfs $W/oci-kept" \
  >"$res/rfake-v-build.txt" 2>&1
cmp -s "$W/check/out.sqfs" "$W/check/build.sqfs" \
  && echo "rfake pull and skopeo + rfake build wrote the same bytes" >"$res/same-output.txt" \
  || echo "rfake pull and skopeo + rfake build wrote DIFFERENT bytes" >"$res/same-output.txt"
out_bytes=$(stat -c %s "$W/check/out.sqfs")
podman=(podman --storage-driver vfs)
as_user "${podman[@]}" --root "$W/p3/root" --runroot "$W/p3/run" pull -q --tls-verify=false "$ref" \
  >/dev/null 2>"$res/podman-check.txt"
rm_p3="${podman[*]} --root $W/pu/root --runroot $W/pu/run unshare rm -rf $W/p3"
as_user sh -c "$rm_p3"
# the warm cache for the launches
as_user env RFAKE_CACHEDIR="$W/warm" "$R" pull -q "$W/check/warm.sqfs" "$ref" >/dev/null
file=$W/warm/images/sha256/${digest#sha256:}.sqfs
[ -f "$file" ] || { echo "pull.sh: $file missing after the pull" >&2; exit 1; }
recpath="$reg/bench/debian/12@amd64.json"
[ -f "$W/warm/refs/$recpath" ] || { echo "pull.sh: no record $W/warm/refs/$recpath" >&2; exit 1; }

# --- The rounds.
pull_names=("rfake pull" "skopeo + build" "podman pull" "skopeo copy" "rfake build")
pull_prep=(
  "rm -rf $W/p1 && mkdir $W/p1"
  "rm -rf $W/p2 && mkdir $W/p2"
  "$rm_p3"
  "rm -rf $W/p4"
  "rm -f $W/p5.sqfs"
)
pull_cmds=(
  "RFAKE_CACHEDIR=$W/p1/cache $R pull -q $W/p1/out.sqfs $ref"
  "skopeo copy -q --src-tls-verify=false $ref oci:$W/p2/oci:12 && $R build -q --skip-special $W/p2/out.sqfs $W/p2/oci"
  "${podman[*]} --root $W/p3/root --runroot $W/p3/run pull -q --tls-verify=false $ref"
  "skopeo copy -q --src-tls-verify=false $ref oci:$W/p4:12"
  "$R build -q --skip-special $W/p5.sqfs $W/oci-kept"
)
age="python3 $stage/bin/age-record.py $W/warm $recpath"
exec_names=("file" "digest" "tag, fresh" "tag, stale")
exec_prep=("$age 30" "$age 30" "$age 30" "$age 120")
exec_cmds=(
  "$R exec $file true"
  "$R exec $dref true"
  "$R exec $ref true"
  "$R exec $ref true"
)

hf() {  # JSON NAMES PREPS CMDS ORDER... (indices)
  local json=$1; shift
  local -n names=$1 preps=$2 cmds=$3
  shift 3
  local args=() i
  for i in "$@"; do
    args+=(-n "${names[$i]}" --prepare "${preps[$i]}" "${cmds[$i]}")
  done
  as_user env RFAKE_CACHEDIR="$W/warm" RFAKE_USER_CONFIG="$HF_CONFIG" \
    hyperfine --style basic --export-json "$json" "${HF_OPTS[@]}" "${args[@]}"
  chown root: "$json"
}

for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then pull_order=(0 1 2 3 4) exec_order=(0 1 2 3)
  else pull_order=(4 3 2 1 0) exec_order=(3 2 1 0); fi
  echo "pull.sh: round $round of $rounds: pull" >&2
  HF_CONFIG=$stage/bin/warm.toml HF_OPTS=(--runs "$runs")
  hf "$W/pull-$round.json" pull_names pull_prep pull_cmds "${pull_order[@]}"
  mv "$W/pull-$round.json" "$res/"
  for mode in warm cold; do
    echo "pull.sh: round $round of $rounds: exec, warm mounts ${mode/cold/off}" >&2
    HF_CONFIG=$stage/bin/$mode.toml HF_OPTS=(--runs "$exec_runs" --warmup 3 -N)
    hf "$W/exec-$mode-$round.json" exec_names exec_prep exec_cmds "${exec_order[@]}"
    mv "$W/exec-$mode-$round.json" "$res/"
  done
  echo "pull.sh: round $round of $rounds: peak disk" >&2
  for what in rfake-pull rfake-exec skopeo; do
    as_user rm -rf "$W/d"
    as_user mkdir "$W/d"
    case $what in
      rfake-pull)
        line=$(as_user env RFAKE_CACHEDIR="$W/d/cache" python3 "$stage/bin/peak-disk.py" "$W/d" \
          "$R" pull -q "$W/d/out.sqfs" "$ref") ;;
      rfake-exec)
        line=$(as_user env RFAKE_CACHEDIR="$W/d/cache" RFAKE_USER_CONFIG="$stage/bin/cold.toml" \
          python3 "$stage/bin/peak-disk.py" "$W/d" "$R" exec "$ref" true) ;;
      skopeo)
        line=$(as_user python3 "$stage/bin/peak-disk.py" "$W/d" sh -c \
          "skopeo copy -q --src-tls-verify=false $ref oci:$W/d/oci:12 && $R build -q --skip-special $W/d/out.sqfs $W/d/oci") ;;
    esac
    # the output: OUT.sqfs, or (exec) the image in the cache
    o=$W/d/out.sqfs
    [ -f "$o" ] || o=$W/d/cache/images/sha256/${digest#sha256:}.sqfs
    echo "$round $what $line out_bytes=$(stat -c %s "$o")" >>"$res/peak-disk.txt"
  done
done
as_user sh -c "$rm_p3"

# --- The summary.
{
  echo "# benches/pull.sh, $stamp"
  echo "host: $(uname -r), $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rfake: $("$R" --version 2>/dev/null | head -1) ($rfake), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "tools: $(hyperfine --version), $(skopeo --version), $(podman --version) (rootless, vfs)"
  echo "image: $ref = $digest; layers $layers_bytes B compressed; output $out_bytes B"
  echo "rounds $rounds, pull runs $runs per round, exec runs $exec_runs per round; user $user"
  cat "$res/same-output.txt"
  echo "check run, rfake -v pull: $(grep -h 'converted to\|^time:' "$res/rfake-v-pull.txt" | tr '\n' ' ')"
  echo "check run, rfake -v build from the OCI layout: $(grep -h '^time:' "$res/rfake-v-build.txt")"
  echo
  python3 - "$res" "$rounds" "$layers_bytes" <<'PY'
import json, statistics as st, sys
res, rounds, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def medians(name):
    out = []
    for r in range(1, rounds + 1):
        d = {x["command"]: x for x in json.load(open(f"{res}/{name}-{r}.json"))["results"]}
        out.append({k: st.median(v["times"]) for k, v in d.items()})
    return out
def fmt(x, unit):
    return f"{x:.2f} s" if unit == "s" else f"{x * 1000:.1f} ms"
def table(name, base, others, unit, rfake_first, targets):
    # rfake_first: the ratios are base / other (rfake pull against its
    # peers); else other / base (a docker:// launch against the file).
    per = medians(name)
    print(f"## {name}: median per round, and the median of the rounds")
    for k in [base] + others:
        vals = [p[k] for p in per]
        print(f"  {k:16s} " + "  ".join(fmt(v, unit) for v in vals) + f"   median {fmt(st.median(vals), unit)}")
    for k in others:
        if rfake_first:
            label, ratios = f"{base} / {k}", [p[base] / p[k] for p in per]
        else:
            label, ratios = f"{k} / {base}", [p[k] / p[base] for p in per]
        m, t = st.median(ratios), targets.get(k)
        note = "" if t is None else f"  target <= {t}: {'met' if m <= t else 'NOT met'}"
        print(f"  ratio {label:28s} " + "  ".join(f"{x:.2f}" for x in ratios)
              + f"   median {m:.2f} (range {min(ratios):.2f}-{max(ratios):.2f}){note}")
    print()
table("pull", "rfake pull", ["skopeo + build", "podman pull", "skopeo copy", "rfake build"], "s", True,
      {"skopeo + build": 0.8, "podman pull": 1.0})
# CPU time (user + system, hyperfine's means per round; the children's
# included): less at the mercy of other load on the host than wall time.
print("## pull: CPU time (user + system) per round, and the median of the rounds")
cpu = []
for r in range(1, rounds + 1):
    d = {x["command"]: x for x in json.load(open(f"{res}/pull-{r}.json"))["results"]}
    cpu.append({k: v["user"] + v["system"] for k, v in d.items()})
for k in cpu[0]:
    vals = [c[k] for c in cpu]
    print(f"  {k:16s} " + "  ".join(f"{v:.2f} s" for v in vals) + f"   median {st.median(vals):.2f} s")
for k in ["skopeo + build", "podman pull"]:
    ratios = [c["rfake pull"] / c[k] for c in cpu]
    print(f"  ratio rfake pull / {k:16s} " + "  ".join(f"{x:.2f}" for x in ratios)
          + f"   median {st.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")
print()
for mode in ["warm", "cold"]:
    table(f"exec-{mode}", "file", ["digest", "tag, fresh", "tag, stale"], "ms", False,
          {"digest": 1.1, "tag, fresh": 1.1, "tag, stale": 1.1})
print("## peak disk (bytes allocated under the directory, open files included)")
rows = [l.split() for l in open(f"{res}/peak-disk.txt")]
for what in ["rfake-pull", "rfake-exec", "skopeo"]:
    ratios = []
    for r in rows:
        if r[1] != what: continue
        kv = dict(x.split("=") for x in r[2:])
        peak, outb = int(kv["peak_bytes"]), int(kv["out_bytes"])
        ratios.append(peak / (layers + outb))
        print(f"  round {r[0]} {what:10s} peak {peak / 1e6:.1f} MB, final {int(kv['final_bytes']) / 1e6:.1f} MB, "
              f"layers + output {(layers + outb) / 1e6:.1f} MB, ratio {peak / (layers + outb):.2f}, wall {kv['wall_s']} s, rc {kv['rc']}")
    m = st.median(ratios)
    note = f"  target <= 1.0: {'met' if m <= 1.0 else 'NOT met'}" if what == "rfake-pull" else ""
    print(f"  {what}: peak / (layers + output) median {m:.2f} (range {min(ratios):.2f}-{max(ratios):.2f}){note}")
PY
} >"$res.txt"
cp "$res.txt" "$out/pull-latest.txt"
cat "$res.txt"
