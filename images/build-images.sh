#!/bin/bash
# Build rfake's demo and test images with `rfake build`, from the recipe
# images/recipes/demo.toml (busybox-static and images/demo/rootfs).
#
#   images/build-images.sh OUTDIR
#
# Writes, replacing what an earlier run left:
#   OUTDIR/demo.sqfs         SquashFS (gzip, every file owned by root)
#   OUTDIR/demo.sif          the same in a SIF for this host's architecture
#   OUTDIR/demo-arm64.sif    the same marked arm64 (architecture-mismatch tests)
#   OUTDIR/demo/             demo.sqfs unpacked by unsquashfs (directory images)
#
# Needs: an rfake binary (RFAKE_BIN, else target/release/rfake or
# target/debug/rfake), busybox-static (/bin/busybox), squashfs-tools
# (unsquashfs, the independent check and the unpacking). No root needed.
# Reproducible: two runs give byte-identical images (files keep their times,
# clamped to SOURCE_DATE_EPOCH when it is set; what rfake adds: it, or 0).
set -euo pipefail

[[ $# -eq 1 && -n $1 && $1 != -* ]] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
recipe="$here/recipes/demo.toml"
outdir=$1

die() { echo "build-images: error: $*" >&2; exit 1; }

rfake=${RFAKE_BIN:-}
if [[ -z $rfake ]]; then
    for candidate in "$top/target/release/rfake" "$top/target/debug/rfake"; do
        if [[ -x $candidate ]]; then rfake=$candidate; break; fi
    done
fi
[[ -n $rfake && -x $rfake ]] || die "no rfake binary: run 'cargo build' or set RFAKE_BIN"
[[ -x /bin/busybox ]] || die "/bin/busybox not found: install the Debian package busybox-static"
command -v unsquashfs >/dev/null || die "unsquashfs not found: install squashfs-tools"

mkdir -p "$outdir"
"$rfake" build "$outdir/demo.sqfs" "$recipe" >/dev/null
"$rfake" build "$outdir/demo.sif" "$recipe" >/dev/null
"$rfake" build --arch arm64 "$outdir/demo-arm64.sif" "$recipe" >/dev/null

# Independent check: squashfs-tools reads what rfake wrote.
unsquashfs -l "$outdir/demo.sqfs" | grep -x 'squashfs-root/etc/rfake-demo.txt' >/dev/null ||
    die "unsquashfs cannot list $outdir/demo.sqfs"

rm -rf "$outdir/demo.tmp"
unsquashfs -no-progress -d "$outdir/demo.tmp" "$outdir/demo.sqfs" >/dev/null
rm -rf "$outdir/demo"
mv "$outdir/demo.tmp" "$outdir/demo"
chmod -R a+rX "$outdir"
echo "build-images: built demo.sqfs demo.sif demo-arm64.sif demo/ in $outdir"
