#!/bin/bash
# Build rfake's demo image from the Debian package busybox-static.
#
#   images/build-images.sh OUTDIR
#
# Writes, replacing what an earlier run left:
#   OUTDIR/demo/             unpacked root filesystem (recipe images/demo/rootfs + busybox)
#   OUTDIR/demo.sqfs         the same as SquashFS (gzip, all files owned by root)
#   OUTDIR/demo.sif          the SquashFS wrapped in a SIF file for this host's architecture
#   OUTDIR/demo-arm64.sif    the same SquashFS marked arm64 (architecture-mismatch tests)
#
# Needs: busybox-static (/bin/busybox), squashfs-tools (mksquashfs, unsquashfs), python3.
# Runs as any user, no root needed. The outputs are reproducible: two runs give
# byte-identical demo.sqfs and *.sif. Time stamps are $SOURCE_DATE_EPOCH, or 0.
# Environment: BUSYBOX (default /bin/busybox) picks the busybox binary to copy.
set -euo pipefail

usage() {
    echo "usage: $0 OUTDIR" >&2
    exit 2
}
[[ $# -eq 1 && -n $1 && $1 != -* ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
recipe="$here/demo/rootfs"
sif_wrap="$here/sif-wrap.py"
busybox=${BUSYBOX:-/bin/busybox}
epoch=${SOURCE_DATE_EPOCH:-0}

die() {
    echo "build-images: error: $*" >&2
    exit 1
}
log() {
    echo "build-images: $*" >&2
}

[[ $epoch =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be a non-negative integer, not '$epoch'"
[[ -x $busybox ]] || die "$busybox not found: install the Debian package busybox-static"
for tool in mksquashfs unsquashfs python3; do
    command -v "$tool" >/dev/null ||
        die "$tool not found: install squashfs-tools and python3"
done
[[ -d $recipe ]] || die "recipe directory $recipe missing"

# The image has no libraries: busybox must be statically linked (no ELF interpreter).
python3 - "$busybox" <<'EOF' || die "$busybox is not a static ELF binary: install busybox-static, not busybox"
import struct, sys
with open(sys.argv[1], "rb") as f:
    elf = f.read()
if elf[:4] != b"\x7fELF":
    sys.exit(1)
is64, end = elf[4] == 2, "<" if elf[5] == 1 else ">"
if is64:
    phoff, = struct.unpack_from(end + "Q", elf, 32)
    phentsize, phnum = struct.unpack_from(end + "HH", elf, 54)
else:
    phoff, = struct.unpack_from(end + "I", elf, 28)
    phentsize, phnum = struct.unpack_from(end + "HH", elf, 42)
for i in range(phnum):
    p_type, = struct.unpack_from(end + "I", elf, phoff + i * phentsize)
    if p_type == 3:  # PT_INTERP: dynamically linked
        sys.exit(1)
EOF

umask 022
outdir=$1
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

# Everything is built under a temporary name in OUTDIR and renamed at the end, so an
# interrupted run never leaves a half-written output under its final name.
work=$(mktemp -d "$outdir/.build-images.XXXXXX")
cleanup() {
    chmod -R u+rwx "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- 1. the unpacked root filesystem -------------------------------------------------------
root="$work/demo"
mkdir "$root"
cp -R "$recipe/." "$root/"
for d in bin sbin usr/bin usr/sbin etc proc sys dev dev/shm tmp home root run var/tmp \
    mnt opt scratch .singularity.d/env; do
    mkdir -p "$root/$d"
done
# Bind-mount targets must exist (git keeps the empty files, but be sure).
for f in etc/hosts etc/resolv.conf etc/passwd etc/group; do
    [[ -e $root/$f ]] || : >"$root/$f"
done

cp "$busybox" "$root/bin/busybox"
applets=$("$root/bin/busybox" --list-full)
[[ -n $applets ]] || die "'$busybox --list-full' printed nothing"
while IFS= read -r applet; do
    [[ -n $applet && $applet != bin/busybox ]] || continue
    [[ $applet != /* && $applet != *..* ]] || die "odd applet path '$applet'"
    dir=$(dirname "$applet")
    mkdir -p "$root/$dir"
    # Relative link, so it resolves inside the image both in a container and on the host.
    if [[ $dir == bin ]]; then
        target=busybox
    else
        up=${dir//[^\/]/}
        [[ $dir == . ]] && target=bin/busybox || target="..${up//\//\/..}/bin/busybox"
    fi
    ln -sfn "$target" "$root/$applet"
done <<<"$applets"

# Symlinks for the bind-destination tests: one that climbs out of the root
# (refused as a destination), one absolute (resolved inside the image).
ln -sfn ../../../.. "$root/opt/up"
ln -sfn /etc "$root/opt/etc-link"

# Modes do not depend on the umask or on how the recipe was checked out: directories 0755,
# files 0644, or 0755 when the recipe file is executable; then the special cases.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -perm -u+x -exec chmod 0755 {} +
find "$root" -type f ! -perm -u+x -exec chmod 0644 {} +
chmod 0755 "$root/bin/busybox" "$root/.singularity.d/runscript"
chmod 0644 "$root/bin/not-executable" "$root/.singularity.d/env/90-environment.sh"
chmod 1777 "$root/tmp" "$root/var/tmp" "$root/dev/shm"
chmod 0700 "$root/root"

for p in bin/sh bin/true bin/false usr/bin/id bin/cat bin/echo bin/sleep usr/bin/env bin/ls; do
    [[ -x $root/$p ]] || die "applet /$p missing from $busybox --list-full"
done
[[ $(cat "$root/etc/rfake-demo.txt") == "hello from the demo image" ]] ||
    die "recipe file etc/rfake-demo.txt has unexpected content"

# --- 2. SquashFS ---------------------------------------------------------------------------
# mksquashfs 4.5 is reproducible by default (-reproducible); file times come from the build
# tree, so pin them (-all-time) and the superblock time (-mkfs-time). -no-xattrs keeps
# xattrs of the build tree (e.g. SELinux labels) out. mksquashfs refuses -all-time and
# -mkfs-time when SOURCE_DATE_EPOCH is set, so that is handed over as the options instead.
env -u SOURCE_DATE_EPOCH mksquashfs "$root" "$work/demo.sqfs" -noappend -all-root \
    -comp gzip -no-xattrs -mkfs-time "$epoch" -all-time "$epoch" -no-progress -quiet >/dev/null
unsquashfs -l "$work/demo.sqfs" | grep -x 'squashfs-root/etc/rfake-demo.txt' >/dev/null ||
    die "unsquashfs cannot list $work/demo.sqfs"
chmod 0644 "$work/demo.sqfs"

# --- 3. SIF --------------------------------------------------------------------------------
python3 "$sif_wrap" "$work/demo.sqfs" "$work/demo.sif"
python3 "$sif_wrap" "$work/demo.sqfs" "$work/demo-arm64.sif" --arch arm64
for sif in demo.sif demo-arm64.sif; do
    offset=$(python3 "$sif_wrap" --check "$work/$sif" | sed -n 's/^rootfs_offset=//p')
    unsquashfs -o "$offset" -l "$work/$sif" | grep -x 'squashfs-root/etc/rfake-demo.txt' >/dev/null ||
        die "unsquashfs -o $offset cannot list $work/$sif"
done

# --- install -------------------------------------------------------------------------------
if [[ -e $outdir/demo ]]; then
    mv "$outdir/demo" "$work/demo.old"
fi
mv "$root" "$outdir/demo"
for f in demo.sqfs demo.sif demo-arm64.sif; do
    mv -f "$work/$f" "$outdir/$f"
done

log "built in $outdir:"
(cd "$outdir" && ls -l -d demo demo.sqfs demo.sif demo-arm64.sif) >&2
