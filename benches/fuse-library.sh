#!/bin/bash
# FUSE library benchmark: rfake's image server on libfuse3's session loop (what rfake ships)
# against the same server on the `fuser` crate's session loop, side by side in one run.
#
#   benches/fuse-library.sh [OPTIONS]                      # as an unprivileged user
#   sudo benches/fuse-library.sh --as-user USER [OPTIONS]  # builds as root, measures as USER
#
# This is a benchmark, not a test: it measures and reports, it does not pass or fail.
#
# The two binaries differ only in src/fuse's session: the default build (src/fuse/session.rs,
# libfuse3's low-level API and multi-threaded loop) and a build with the cargo feature
# `fuser-bench` (src/fuse/fuser_session.rs, fuser 0.18's loop with as many threads, each on
# its own cloned /dev/fuse descriptor). Both answer through the same ImageFs, with the same
# kernel caching (no-open, readdirplus, never-expiring entries). The fuser build is made
# here, into target/fuser-bench (cargo build --release --features fuser-bench).
#
# Every line is cold (warm_linger = 0): a fresh mount and server per launch, which is where
# the library's per-request cost shows (a warm mount answers repeated reads from the kernel's
# caches, with no request at all). Each pair runs in one hyperfine call (-N; it times all runs
# of one line, then all of the other), with RFAKE_CONFIG=/dev/null and a user file holding
# warm_linger = 0:
#
#   1  /bin/true from the busybox demo image
#   2  python3 import storm in the Debian image (the one benches/image-server.sh builds)
#   3  find / -xdev and tar -cf - -C / usr | cat, in the Debian image
#
# Results go to target/bench/fuse-library-STAMP.txt (and fuse-library-latest.txt).
#
# Options:
#   --runs N             hyperfine timed runs per line of 1 and 2 (default 30; 3 uses N/3)
#   --demo IMAGE.sqfs    default target/images/demo.sqfs
#   --debian IMAGE.sqfs  default target/bench/debian.sqfs
#   --as-user USER       when started as root: build as root, measure as USER
#
# Environment: RFAKE_BIN (default target/release/rfake), RFAKE_FUSER_BIN (default
# target/fuser-bench/release/rfake, built when missing or older than the sources).
#
# Exit status: 0 when measured; 2 when something needed is missing; 1 on other errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/.." && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"

missing() {
    echo "fuse-library.sh: $*" >&2
    exit 2
}
usage() {
    sed -n '/^# Options:/,/^set -euo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

runs=30
demo="$project/target/images/demo.sqfs"
debian="$project/target/bench/debian.sqfs"
as_user=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --runs | --demo | --debian | --as-user) [[ $# -ge 2 ]] || usage ;;&
        --runs) [[ $2 =~ ^[0-9]+$ && $2 -ge 3 ]] || usage; runs=$2; shift 2 ;;
        --demo) demo=$2; shift 2 ;;
        --debian) debian=$2; shift 2 ;;
        --as-user) as_user=$2; shift 2 ;;
        -h | --help) usage ;;
        *) echo "fuse-library.sh: unknown argument $1" >&2; usage ;;
    esac
done

libfuse_bin=${RFAKE_BIN:-$project/target/release/rfake}
fuser_bin=${RFAKE_FUSER_BIN:-$project/target/fuser-bench/release/rfake}

if [[ $(id -u) -eq 0 ]]; then
    [[ -n $as_user ]] || missing "rfake refuses to run as root: run as an unprivileged user or pass --as-user USER"
    id -u "$as_user" >/dev/null 2>&1 || missing "--as-user: no user $as_user"
fi

# --- the two binaries ----------------------------------------------------------------------
built_from_sources() { # BIN: newer than every source file?
    [[ -x $1 ]] && [[ -z $(find "$project/src" "$project/Cargo.toml" "$project/build.rs" -newer "$1" -print -quit) ]]
}
if [[ -z ${RFAKE_BIN:-} ]] && ! built_from_sources "$libfuse_bin"; then
    [[ $(id -u) -eq 0 || -w $project/target ]] || missing "$libfuse_bin is missing or stale: cargo build --release"
    (cd "$project" && cargo build --release --quiet) || missing "cargo build --release failed"
fi
if [[ -z ${RFAKE_FUSER_BIN:-} ]] && ! built_from_sources "$fuser_bin"; then
    [[ $(id -u) -eq 0 || -w $project/target ]] || missing "$fuser_bin is missing or stale"
    (cd "$project" && cargo build --release --quiet --features fuser-bench --target-dir target/fuser-bench) ||
        missing "cargo build --features fuser-bench failed"
fi
[[ -x $libfuse_bin && -x $fuser_bin ]] || missing "rfake binaries not found"
[[ -r $demo ]] || missing "demo image $demo not found: images/build-images.sh target/images"
[[ -r $debian ]] || missing "Debian image $debian not found: benches/image-server.sh builds it"
command -v hyperfine >/dev/null || missing "hyperfine not found: apt-get install hyperfine"

save() { # REPORT-FILE: into target/bench, when it can be written
    local out="$project/target/bench" stamp
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    if mkdir -p "$out" 2>/dev/null && cp "$1" "$out/fuse-library-$stamp.txt" 2>/dev/null; then
        cp "$1" "$out/fuse-library-latest.txt"
        echo "results: $out/fuse-library-$stamp.txt" >&2
    else
        echo "fuse-library.sh: results not saved ($out is not writable)" >&2
    fi
}
if [[ $(id -u) -eq 0 ]]; then
    chmod a+rx "$project/target/fuser-bench" "$project/target/fuser-bench/release" 2>/dev/null || true
    report=$(mktemp /tmp/fuse-library-report.XXXXXX)
    trap 'rm -f "$report"' EXIT
    runuser -u "$as_user" -- env RFAKE_BIN="$libfuse_bin" RFAKE_FUSER_BIN="$fuser_bin" \
        FUSE_LIBRARY_NO_SAVE=1 "$self" --runs "$runs" --demo "$demo" --debian "$debian" >"$report"
    cat "$report"
    save "$report"
    exit 0
fi

# --- the measurements (unprivileged) --------------------------------------------------------
work=$(mktemp -d /tmp/fuse-library.XXXXXX)
trap 'rm -rf "$work"' EXIT
printf 'image_server = "builtin"\nwarm_linger = 0\n' >"$work/user.toml"
cd "$HOME"
storm='import json, email, http.client, xml.dom.minidom, asyncio, decimal, sqlite3, unittest, argparse, logging, subprocess'
walk='find / -xdev >/dev/null 2>&1; tar -cf - -C / usr | cat >/dev/null'
launch() { # BIN IMAGE ARGS...: the command line hyperfine runs
    local bin=$1 image=$2
    shift 2
    printf 'env RFAKE_CONFIG=/dev/null RFAKE_USER_CONFIG=%q %q exec %q' "$work/user.toml" "$bin" "$image"
    printf ' %q' "$@"
}
pair() { # NAME RUNS IMAGE ARGS...
    local name=$1 n=$2 image=$3
    shift 3
    for bin in "$libfuse_bin" "$fuser_bin"; do
        eval "$(launch "$bin" "$image" "$@")" >/dev/null 2>"$work/check.err" ||
            { cat "$work/check.err" >&2; echo "fuse-library.sh: $bin failed on $name" >&2; exit 1; }
    done
    hyperfine -N --warmup 2 --runs "$n" --export-json "$work/$name.json" \
        -n libfuse3 "$(launch "$libfuse_bin" "$image" "$@")" \
        -n fuser "$(launch "$fuser_bin" "$image" "$@")" >&2
}
pair true "$runs" "$demo" /bin/true
pair python "$runs" "$debian" python3 -c "$storm"
pair walk $((runs / 3)) "$debian" sh -c "$walk"

python3 - "$work" "$(uname -sr)" "$(nproc)" >"$work/report.txt" <<'PY'
import json, statistics, sys
work, kernel, cpus = sys.argv[1:]
print("# rfake FUSE library benchmark (benches/fuse-library.sh)")
print(f"host: {kernel}, {cpus} CPUs; cold launches (warm_linger = 0); hyperfine medians")
print(f"{'workload':34s} {'libfuse3 ms':>12s} {'fuser ms':>10s} {'fuser / libfuse3':>17s}")
names = {"true": "/bin/true, demo image", "python": "python import storm, Debian",
         "walk": "find / + tar of /usr, Debian"}
for key, label in names.items():
    res = {r["command"]: r for r in json.load(open(f"{work}/{key}.json"))["results"]}
    lf = statistics.median(res["libfuse3"]["times"]) * 1000
    fu = statistics.median(res["fuser"]["times"]) * 1000
    print(f"{label:34s} {lf:12.2f} {fu:10.2f} {fu / lf:17.2f}")
PY
cat "$work/report.txt"
[[ -n ${FUSE_LIBRARY_NO_SAVE:-} ]] || save "$work/report.txt"
