#!/bin/bash
# Start-up benchmark: how long does it take to run /bin/true in a container, rootless?
#
#   benches/startup.sh [OPTIONS] [IMAGE.sqfs]
#
# This is a benchmark, not a test: it measures and reports, it does not pass or fail.
#
# What is measured: the wall-clock time of one complete run of /bin/true, from exec of the
# launcher to its exit, as the current unprivileged user. One hyperfine run times these
# side by side (hyperfine -N: no shell in between; 5 warm-up runs, then 50 timed runs each):
#
#   true            /bin/true on the host: the floor (fork+exec+wait)
#   ch-run sqfs     ch-run IMAGE.sqfs -- /bin/true    Charliecloud, mounting the SquashFS
#                                                     with its built-in squashfuse
#   ch-run dir      ch-run DIR -- /bin/true           the unpacked directory (informational)
#   rfake sqfs      rfake exec IMAGE.sqfs /bin/true   rfake: user+mount namespace, squashfuse
#   rfake dir       rfake exec DIR /bin/true          (informational)
#
# Start-up dominates all of these: creating the namespaces, mounting the SquashFS through
# FUSE, setting up the bind mounts, pivoting, exec'ing, and tearing the FUSE mount down.
#
# Target: the rfake sqfs median is at most 0.7 x the ch-run sqfs median (same SquashFS,
# same machine, same run).
#
# Results go to target/bench/ (or --out DIR): startup-STAMP.json and .md (hyperfine's
# exports) and startup-STAMP.txt (the summary printed at the end: medians and the ratios
# rfake/ch-run and rfake/true); startup-latest.* are copies of the newest.
#
# Options:
#   IMAGE.sqfs       SquashFS image; default target/images/demo.sqfs, built with
#                    images/build-images.sh when missing
#   --dir DIR        unpacked image for the "dir" lines; default: IMAGE without .sqfs when
#                    that is a directory (target/images/demo for the default image)
#   --out DIR        where the results go (default target/bench)
#   --runs N         timed runs per command (default 50)
#   --warmup N       warm-up runs per command (default 5)
#   --no-rfake       leave rfake out (to check the set-up before rfake is built)
#   --allow-root     run even as root (the numbers then say nothing about rootless use)
#
# Environment: RFAKE_BIN (default target/release/rfake), CH_RUN (default ch-run on PATH).
#
# Exit status: 0 when measured; 2 when something needed is missing (the rfake binary,
# hyperfine, ch-run, python3, the image) or the user is root; 1 on other errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/.." && pwd)

die() {
    echo "startup.sh: error: $*" >&2
    exit 1
}
missing() {
    echo "startup.sh: $*" >&2
    exit 2
}
note() {
    echo "startup.sh: $*" >&2
}
usage() {
    sed -n '/^# Options:/,/^set -euo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

image=""
dir=""
outdir="$project/target/bench"
runs=50
warmup=5
with_rfake=1
allow_root=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --dir) [[ $# -ge 2 ]] || usage; dir=$2; shift 2 ;;
        --out) [[ $# -ge 2 ]] || usage; outdir=$2; shift 2 ;;
        --runs) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || usage; runs=$2; shift 2 ;;
        --warmup) [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || usage; warmup=$2; shift 2 ;;
        --no-rfake) with_rfake=0; shift ;;
        --allow-root) allow_root=1; shift ;;
        -h | --help) usage ;;
        -*) echo "startup.sh: unknown option $1" >&2; usage ;;
        *) [[ -z $image ]] || usage; image=$1; shift ;;
    esac
done

# --- what is needed ------------------------------------------------------------------------
if [[ $(id -u) -eq 0 && $allow_root -eq 0 ]]; then
    missing "refusing to run as root: this measures rootless start-up; run it as an" \
        "unprivileged user (or pass --allow-root)"
fi

rfake=${RFAKE_BIN:-$project/target/release/rfake}
if [[ $with_rfake -eq 1 && ! -x $rfake ]]; then
    missing "rfake binary not found at $rfake: build it (cargo build --release)," \
        "set RFAKE_BIN, or pass --no-rfake to time the others only"
fi
command -v hyperfine >/dev/null || missing "hyperfine not found: apt-get install hyperfine"
command -v python3 >/dev/null || missing "python3 not found: apt-get install python3"
ch_run=${CH_RUN:-ch-run}
ch_run=$(command -v "$ch_run") ||
    missing "ch-run not found: apt-get install charliecloud-runtime (or set CH_RUN)"
true_bin=$(command -v true) # the host's true: /usr/bin/true on merged-/usr systems
[[ $true_bin == /* ]] || true_bin=/bin/true

# ch-run refuses to start without $USER.
export USER="${USER:-$(id -un)}"

if [[ -z $image ]]; then
    image="$project/target/images/demo.sqfs"
    [[ -n $dir ]] || dir="$project/target/images/demo"
    if [[ ! -f $image ]]; then
        note "building the demo image into $project/target/images"
        "$project/images/build-images.sh" "$project/target/images"
    fi
fi
[[ -f $image && -r $image ]] || missing "image $image not found or not readable"
image=$(cd "$(dirname "$image")" && pwd)/$(basename "$image")
if [[ -z $dir && $image == *.sqfs && -d ${image%.sqfs} ]]; then
    dir=${image%.sqfs}
fi
if [[ -n $dir ]]; then
    [[ -d $dir ]] || missing "directory image $dir not found"
    dir=$(cd "$dir" && pwd)
fi

# --- the commands --------------------------------------------------------------------------
# keys[i] names commands[i] for the summary; required[i]=0 marks informational lines, which
# are dropped (with a note) when they do not work, instead of stopping the benchmark.
keys=()
names=()
commands=()
required=()
add() { # KEY NAME REQUIRED ARGV...
    local key=$1 name=$2 req=$3
    shift 3
    local out rc=0
    out=$("$@" 2>&1 </dev/null) || rc=$?
    if [[ $rc -ne 0 ]]; then
        local msg="'$*' failed (exit $rc): ${out:0:2000}"
        [[ $req -eq 1 ]] && die "$msg"
        note "dropping '$name': $msg"
        return 0
    fi
    keys+=("$key")
    names+=("$name")
    commands+=("$(printf '%q ' "$@")")
    required+=("$req")
}

add true "true (host)" 1 "$true_bin"
add chrun_sqfs "ch-run sqfs" 1 "$ch_run" "$image" -- /bin/true
[[ -z $dir ]] || add chrun_dir "ch-run dir" 0 "$ch_run" "$dir" -- /bin/true
if [[ $with_rfake -eq 1 ]]; then
    add rfake_sqfs "rfake exec sqfs" 1 "$rfake" exec "$image" /bin/true
    [[ -z $dir ]] || add rfake_dir "rfake exec dir" 0 "$rfake" exec "$dir" /bin/true
fi

# --- run -----------------------------------------------------------------------------------
mkdir -p "$outdir" || missing "cannot create $outdir (pass --out DIR)"
outdir=$(cd "$outdir" && pwd)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
base="$outdir/startup-$stamp"

hf_args=(-N --warmup "$warmup" --runs "$runs"
    --export-json "$base.json" --export-markdown "$base.md")
for i in "${!commands[@]}"; do
    hf_args+=(--command-name "${names[$i]}" "${commands[$i]}")
done

{
    echo "# rfake start-up benchmark, $stamp"
    echo "host:      $(uname -srm), $(nproc) CPUs"
    echo "user:      $USER (uid $(id -u))"
    echo "image:     $image ($(stat -c %s "$image") bytes)"
    [[ -z $dir ]] || echo "dir:       $dir"
    echo "ch-run:    $ch_run ($("$ch_run" --version 2>&1 | head -n1))"
    if [[ $with_rfake -eq 1 ]]; then
        echo "rfake:     $rfake ($("$rfake" --version 2>&1 </dev/null | head -n1 || true))"
    fi
    echo "hyperfine: $(hyperfine --version) -N, $warmup warm-up + $runs timed runs"
    echo
} >"$base.txt"
cat "$base.txt"

hyperfine "${hf_args[@]}"

# --- summary -------------------------------------------------------------------------------
python3 - "$base.json" "${keys[@]}" >>"$base.txt" <<'EOF'
import json
import sys

path, keys = sys.argv[1], sys.argv[2:]
with open(path) as f:
    results = json.load(f)["results"]
if len(results) != len(keys):
    sys.exit(f"{path}: {len(results)} results for {len(keys)} commands")
by_key = dict(zip(keys, results))

print(f"{'command':<18} {'median ms':>10} {'mean ms':>10} {'stddev ms':>10} {'min ms':>10}")
for r in results:
    cols = (r["median"], r["mean"], r["stddev"] or 0.0, r["min"])
    print(f"{r['command']:<18}" + "".join(f" {c * 1000:10.2f}" for c in cols))
print()

def ratio(a, b, label, target=None):
    if a in by_key and b in by_key:
        x = by_key[a]["median"] / by_key[b]["median"]
        line = f"{label:<28} {x:6.2f}"
        if target is not None:
            line += f"   (target <= {target}: {'met' if x <= target else 'NOT met'})"
        print(line)

ratio("rfake_sqfs", "chrun_sqfs", "rfake/ch-run, sqfs (median)", 0.7)
ratio("rfake_dir", "chrun_dir", "rfake/ch-run, dir (median)")
ratio("rfake_sqfs", "true", "rfake/true, sqfs (median)")
ratio("rfake_dir", "true", "rfake/true, dir (median)")
ratio("chrun_sqfs", "true", "ch-run/true, sqfs (median)")
ratio("chrun_dir", "true", "ch-run/true, dir (median)")
EOF

echo
sed -n '/^command /,$p' "$base.txt"
for ext in json md txt; do
    cp "$base.$ext" "$outdir/startup-latest.$ext"
done
echo
echo "results: $base.{json,md,txt} (copies: $outdir/startup-latest.*)"
