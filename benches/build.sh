#!/usr/bin/env bash
# Build benchmark: `rfake build` against `mksquashfs` on the same directory,
# side by side in one hyperfine run, plus the output sizes. A benchmark, not
# a test: it measures and reports.
#
#   benches/build.sh [SOURCE_DIR]
#
# SOURCE_DIR defaults to a Debian 12 root made with debootstrap (minbase plus
# python3, a few hundred MB) in target/bench/debian-root; making it needs
# root and the debootstrap package (the script says so otherwise).
# (The root has device nodes in /dev: rfake leaves them out, --skip-special.)
# Both tools write gzip, 128 KiB blocks, all files owned by root, using all
# cores. Target: rfake no slower than 1.2 x mksquashfs and no bigger than
# 1.05 x its output.
# Environment: RFAKE_BIN (default target/release/rfake), RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
rfake=${RFAKE_BIN:-target/release/rfake}
runs=${RUNS:-3}
out=target/bench
mkdir -p "$out"
[[ -x $rfake ]] || { echo "build.sh: $rfake missing: cargo build --release" >&2; exit 2; }
for tool in mksquashfs hyperfine; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool missing: apt-get install squashfs-tools hyperfine" >&2; exit 2; }
done

src=${1:-$out/debian-root}
if [[ ! -d $src ]]; then
  if [[ $(id -u) != 0 ]] || ! command -v debootstrap >/dev/null; then
    echo "build.sh: $src missing; as root with debootstrap installed it is made with:" >&2
    echo "  debootstrap --variant=minbase --include=python3 bookworm $src" >&2
    exit 2
  fi
  debootstrap --variant=minbase --include=python3 bookworm "$src" >/dev/null
fi
echo "source: $src ($(du -sh "$src" | cut -f1), $(find "$src" | wc -l) entries)"

a=$out/build-rfake.sqfs b=$out/build-mksquashfs.sqfs
hyperfine --warmup 1 --runs "$runs" --export-json "$out/build.json" \
  -n "rfake build" "$rfake build --skip-special $a $src" \
  -n "mksquashfs" "mksquashfs $src $b -noappend -all-root -comp gzip -b 131072 -no-progress -quiet"

python3 - "$out/build.json" "$a" "$b" <<'PY'
import json, os, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
t_r, t_m = res["rfake build"]["median"], res["mksquashfs"]["median"]
s_r, s_m = os.path.getsize(sys.argv[2]), os.path.getsize(sys.argv[3])
print(f"median time: rfake {t_r:.2f} s, mksquashfs {t_m:.2f} s, ratio {t_r / t_m:.2f} (target <= 1.2)")
print(f"output size: rfake {s_r} bytes, mksquashfs {s_m} bytes, ratio {s_r / s_m:.3f} (target <= 1.05)")
PY
