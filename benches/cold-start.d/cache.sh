#!/bin/bash
# Cold start with a prefetch profile and with the node cache (issue 18): the first launch of a
# "second job" on a node, against the same launch with neither, and against ch-run on the
# unpacked directory.
#
#   sudo benches/cold-start.d/cache.sh            (or run by benches/cold-start.sh)
#
# This is a benchmark, not a test: it measures and reports.
#
# Every launch is cold: warm_linger = 0 (a fresh mount and server each time, the block cache
# empty). Four configurations, timed side by side in one hyperfine run per round (-N):
#   cold      prefetch_profiles = false, no node cache: today's cold launch
#   profile   the image's prefetch profile recorded by an earlier launch (the first job)
#             and replayed in the background by this one
#   node      node_cache_dir = a directory on /dev/shm that an earlier launch filled
#   both      profile and node cache
#   ch-run    ch-run on the unpacked directory (the baseline of issue 18's targets)
# and what the first job pays for them: `first` (profiles on, node cache on, both emptied before
# each launch: recording and filling) against `cold`, on the heavy workload.
# Workloads: `true` from the busybox demo image; a heavier one from a Debian image: the python
# import storm ($CS_STORM) when $CS_DEBIAN has python3, else `ompi_info` (loads every Open MPI
# component: a library-loading storm) from the MPI image. The heavy one also runs with the
# image file's pages dropped before each launch (posix_fadvise DONTNEED: the image read from
# its file system again, as on a node that has not read it).
#
# Rounds alternate the configurations inside each hyperfine run and repeat; the summary gives,
# per workload and configuration, the median over rounds of each round's median and the range
# (min-max) over rounds, and the ratios to `cold` and to ch-run. Lines start with "cache" (what
# benches/cold-start.sh copies into its summary).
#
# Environment (benches/cold-start.sh sets them; defaults for a standalone run):
#   CS_USER (rfake-test) CS_RFAKE (target/release/rfake) CS_DEMO CS_DEMO_DIR CS_DEBIAN
#   CS_DEBIAN_DIR CS_STORM CS_ROUNDS (5) CS_RUNS (10) CS_OUT (target/bench/cache-STAMP)
#   CH_RUN (ch-run)
#
# Exit status: 0 when measured; 2 when something needed is missing; 1 on other errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/../.." && pwd)
note() { echo "cache.sh: $*" >&2; }
missing() {
    echo "cache.sh: $*" >&2
    exit 2
}

[[ $(id -u) -eq 0 ]] || missing "run as root (it runs the launches as \$CS_USER)"
user=${CS_USER:-rfake-test}
id "$user" >/dev/null 2>&1 || missing "no user $user"
rfake=${CS_RFAKE:-$project/target/release/rfake}
[[ -x $rfake ]] || missing "no rfake binary at $rfake"
command -v hyperfine >/dev/null || missing "hyperfine is not installed"
ch_run=${CH_RUN:-$(command -v ch-run || true)}
demo=${CS_DEMO:-/var/tmp/rfake-static/images/demo.sqfs}
demo_dir=${CS_DEMO_DIR:-${demo%.sqfs}}
[[ -f $demo ]] || missing "no demo image $demo"
storm=${CS_STORM:-import json, email, http.client, xml.dom.minidom, asyncio, decimal, sqlite3, unittest, argparse, logging, subprocess}
heavy=${CS_DEBIAN:-}
heavy_dir=${CS_DEBIAN_DIR:-${heavy%.sqfs}}
if [[ -n $heavy && -f $heavy && -x $heavy_dir/usr/bin/python3 ]]; then
    heavy_name=python-storm
    heavy_cmd=(python3 -c "$storm")
else
    heavy=/var/tmp/rfake-static/mpi.sqfs
    heavy_dir=/var/tmp/rfake-mpi-image/rootfs
    heavy_name=ompi_info
    heavy_cmd=(ompi_info)
fi
[[ -f $heavy ]] || missing "no heavy image $heavy"
rounds=${CS_ROUNDS:-5}
runs=${CS_RUNS:-10}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${CS_OUT:-$project/target/bench/cache-$stamp}
mkdir -p "$out"

scratch=$(mktemp -d /var/tmp/rfake-bench-cache.XXXXXX)
shm=$(mktemp -d /dev/shm/rfake-bench-cache.XXXXXX)
cleanup() { rm -rf "$scratch" "$shm"; }
trap cleanup EXIT
chmod 0755 "$scratch"
chmod 1777 "$shm"
install -m 0755 "$rfake" "$scratch/rfake"
for c in cold profile node both first; do
    mkdir -p "$scratch/$c/home"
    {
        echo "warm_linger = 0"
        case $c in cold | node) echo "prefetch_profiles = false" ;; esac
        case $c in node | both | first) echo "node_cache_dir = \"$shm/$c\"" ;; esac
    } >"$scratch/$c/site.toml"
    mkdir -p "$shm/$c"
done
mkdir -p "$scratch/res"
chown -R "$user:" "$scratch" "$shm"
chmod 1777 "$shm"/*

# The command line of a launch in configuration $1 (words for hyperfine).
launch() {
    local c=$1 image=$2
    shift 2
    printf 'env RFAKE_CONFIG=%s RFAKE_USER_CONFIG= HOME=%s RFAKE_CACHEDIR=%s %s exec --no-mount home,cwd --pwd / %s' \
        "$scratch/$c/site.toml" "$scratch/$c/home" "$scratch/$c/cache" "$scratch/rfake" "$image"
    printf ' %q' "$@"
}
as_user() { runuser -u "$user" -- "$@"; }

# The first job: one launch per configuration and workload records the profiles and fills
# the node caches.
for c in profile node both; do
    for w in demo heavy; do
        if [[ $w == demo ]]; then img=$demo cmd=(true); else img=$heavy cmd=("${heavy_cmd[@]}"); fi
        # shellcheck disable=SC2046
        eval "as_user $(launch "$c" "$img" "${cmd[@]}")" >/dev/null
    done
done
profiles=$(find "$scratch/profile/cache/profiles" -name '*.profile' -printf '%f %s bytes\n' | sort)
entries=$(find "$shm/node" -type f | wc -l)
node_bytes=$(du -sb "$shm/node" | cut -f1)
note "profiles: $profiles"
note "node cache: $entries entries, $node_bytes bytes"

drop="python3 -c 'import os; fd = os.open(\"$heavy\", os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)'"
for r in $(seq 1 "$rounds"); do
    for w in demo heavy heavy-dropped heavy-first; do
        case $w in
        demo) img=$demo dir=$demo_dir cmd=(true) ;;
        *) img=$heavy dir=$heavy_dir cmd=("${heavy_cmd[@]}") ;;
        esac
        args=(-N --runs "$runs" --warmup 1 --export-json "$scratch/res/$w-r$r.json" --style none)
        configs=(cold profile node both)
        [[ $w == heavy-dropped ]] && args+=(--prepare "$drop")
        if [[ $w == heavy-first ]]; then
            # The first job's cost: profile and node cache emptied before each launch.
            args+=(--prepare "sh -c 'rm -rf $scratch/first/cache/profiles $shm/first/rfake-*'")
            configs=(cold first)
        fi
        for c in "${configs[@]}"; do
            args+=(-n "$c" "$(launch "$c" "$img" "${cmd[@]}")")
        done
        if [[ -n $ch_run && -d $dir ]]; then
            args+=(-n ch-run "$ch_run $dir -- $(printf ' %q' "${cmd[@]}")")
        fi
        note "round $r: $w"
        as_user hyperfine "${args[@]}" >"$out/$w-r$r.log" 2>&1 ||
            { note "hyperfine failed: see $out/$w-r$r.log"; exit 1; }
        cp "$scratch/res/$w-r$r.json" "$out/"
    done
done

python3 - "$out" "$rounds" "$heavy_name" "$entries" "$node_bytes" <<'EOF' | tee "$out/summary.txt"
import json, statistics, sys
out, rounds, heavy, entries, node_bytes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
def spread(v, f="{:.1f}"):
    return f"{f.format(statistics.median(v))} ({f.format(min(v))}-{f.format(max(v))})"
names = {"demo": "true (demo)", "heavy": heavy, "heavy-dropped": heavy + ", image pages dropped",
         "heavy-first": heavy + ", the first job (recording, filling the node cache)"}
print(f"cache: node cache after the first job: {entries} entries, {node_bytes / 2**20:.1f} MiB")
for w, label in names.items():
    med = {}
    for r in range(1, rounds + 1):
        for res in json.load(open(f"{out}/{w}-r{r}.json"))["results"]:
            med.setdefault(res["command"], []).append(res["median"] * 1000)
    ours = [c for c in ["cold", "profile", "node", "both", "first"] if c in med]
    cs = ours + (["ch-run"] if "ch-run" in med else [])
    ms = ", ".join(f"{c} {spread(med[c], '{:.0f}')}" for c in cs)
    ratio = lambda c, base: spread([x / y for x, y in zip(med[c], med[base])], "{:.2f}")
    vs_cold = ", ".join(f"{c} x{ratio(c, 'cold')}" for c in ours[1:])
    line = f"cache {label} ({rounds} rounds; ms, median (min-max)): {ms}; against cold: {vs_cold}"
    if "ch-run" in med:
        line += "; against ch-run dir: " + ", ".join(f"{c} x{ratio(c, 'ch-run')}" for c in ours)
    print(line)
EOF
note "raw numbers: $out"
