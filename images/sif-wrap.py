#!/usr/bin/env python3
"""Wrap a SquashFS root filesystem in a minimal SIF file, or check a SIF file.

    sif-wrap.py SQUASHFS OUT.sif [--arch ARCH]   write OUT.sif
    sif-wrap.py --check FILE.sif                 parse FILE.sif, print its root filesystem

Standard library only. Written for rfake's test images until `rfake build` exists.

The layout follows the SIF format (see shared/testdata/sif/README.md), all little-endian
and packed:

    offset 0      global header, 128 bytes
    offset 4096   descriptor table: 48 descriptors of 585 bytes (ends at 32176)
    offset 32768  the SquashFS image (first object, aligned to 4096)

One descriptor is used: a partition (0x4004), id 1, group 1, named "rootfs", holding a
squashfs (fstype 1) primary system partition (parttype 2) for ARCH. As in files written by
the Go sif library, the header's data offset is the end of the descriptor table, the data
size runs from there to the end of the file, and an object's "size with padding" counts
the alignment padding in front of it.

Output is deterministic: the UUID is all zeros and every time stamp is $SOURCE_DATE_EPOCH,
or 0 when it is not set. The file is written next to OUT.sif and renamed into place.
"""

import argparse
import os
import platform
import shutil
import struct
import sys
import tempfile

LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
MAGIC = b"SIF_MAGIC\0"
VERSION = b"01\0"

HEADER_FMT = "<32s10s3s3s16s8q"
HEADER_SIZE = struct.calcsize(HEADER_FMT)  # 128
DESCR_FIXED_FMT = "<iBIIIqqqqqqq"  # type, used, id, group, link, offset, size, size+pad,
DESCR_FIXED_SIZE = struct.calcsize(DESCR_FIXED_FMT)  # created, modified, uid, gid = 73
NAME_SIZE = 128
EXTRA_SIZE = 384
DESCR_SIZE = DESCR_FIXED_SIZE + NAME_SIZE + EXTRA_SIZE  # 585
DESCR_TOTAL = 48
DESCR_OFFSET = 4096
ALIGN = 4096
assert HEADER_SIZE == 128 and DESCR_SIZE == 585

DATA_PARTITION = 0x4004
GROUP_MASK = 0xF0000000
FSTYPE_SQUASHFS = 1
PARTTYPE_PRIMSYS = 2

# SIF architecture codes (3 bytes: two ASCII digits and a NUL), by Go architecture name.
ARCH_CODES = {
    "386": b"01\0",
    "amd64": b"02\0",
    "arm": b"03\0",
    "arm64": b"04\0",
    "ppc64": b"05\0",
    "ppc64le": b"06\0",
    "mips": b"07\0",
    "mipsle": b"08\0",
    "mips64": b"09\0",
    "mips64le": b"10\0",
    "s390x": b"11\0",
    "riscv64": b"12\0",
}
# platform.machine() / uname -m spellings.
MACHINE_ALIASES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "ppc64": "ppc64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips": "mips",
    "mips64": "mips64",
}

SQUASHFS_MAGIC = b"hsqs"
SQUASHFS_SUPERBLOCK_SIZE = 96


class SifError(Exception):
    pass


def host_arch():
    machine = platform.machine().lower()
    if machine in MACHINE_ALIASES:
        return MACHINE_ALIASES[machine]
    raise SifError(f"unknown host architecture {machine!r}: pass --arch")


def align_up(n, a):
    return (n + a - 1) // a * a


def source_date_epoch():
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if value == "":
        return 0
    try:
        return int(value)
    except ValueError:
        raise SifError(f"SOURCE_DATE_EPOCH is not an integer: {value!r}") from None


def squashfs_bytes_used(superblock, what):
    """Check a SquashFS superblock; return its bytes_used."""
    if len(superblock) < SQUASHFS_SUPERBLOCK_SIZE or superblock[:4] != SQUASHFS_MAGIC:
        raise SifError(f"{what}: not a SquashFS image (no 'hsqs' magic)")
    major, minor = struct.unpack_from("<HH", superblock, 28)
    if (major, minor) != (4, 0):
        raise SifError(f"{what}: unsupported SquashFS version {major}.{minor}")
    (bytes_used,) = struct.unpack_from("<Q", superblock, 40)
    return bytes_used


def pack_header(arch_code, epoch, data_offset, data_size):
    return struct.pack(
        HEADER_FMT,
        LAUNCH_SCRIPT,  # struct pads with NULs to 32 bytes
        MAGIC,
        VERSION,
        arch_code,
        bytes(16),  # UUID: zero, for reproducible output
        epoch,  # created
        epoch,  # modified
        DESCR_TOTAL - 1,  # descriptors free
        DESCR_TOTAL,  # descriptors total
        DESCR_OFFSET,
        DESCR_TOTAL * DESCR_SIZE,
        data_offset,
        data_size,
    )


def pack_partition_descriptor(arch_code, epoch, offset, size, size_with_padding):
    fixed = struct.pack(
        DESCR_FIXED_FMT,
        DATA_PARTITION,
        1,  # used
        1,  # id
        1 | GROUP_MASK,  # group 1
        0,  # linked id
        offset,
        size,
        size_with_padding,
        epoch,
        epoch,
        0,  # uid
        0,  # gid
    )
    name = b"rootfs".ljust(NAME_SIZE, b"\0")
    extra = struct.pack("<ii3s", FSTYPE_SQUASHFS, PARTTYPE_PRIMSYS, arch_code)
    extra = extra.ljust(EXTRA_SIZE, b"\0")
    return fixed + name + extra


def wrap(squashfs_path, out_path, arch):
    if arch not in ARCH_CODES:
        raise SifError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCH_CODES))}")
    arch_code = ARCH_CODES[arch]
    epoch = source_date_epoch()

    size = os.path.getsize(squashfs_path)
    with open(squashfs_path, "rb") as f:
        bytes_used = squashfs_bytes_used(f.read(SQUASHFS_SUPERBLOCK_SIZE), squashfs_path)
    if bytes_used > size:
        raise SifError(f"{squashfs_path}: truncated SquashFS ({size} bytes, superblock says {bytes_used})")

    descr_end = DESCR_OFFSET + DESCR_TOTAL * DESCR_SIZE  # 32176
    offset = align_up(descr_end, ALIGN)  # 32768
    size_with_padding = (offset - descr_end) + size
    file_size = offset + size

    header = pack_header(arch_code, epoch, descr_end, file_size - descr_end)
    descriptor = pack_partition_descriptor(arch_code, epoch, offset, size, size_with_padding)

    out_dir = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=".sif-wrap-", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(header.ljust(DESCR_OFFSET, b"\0"))
            table = descriptor + bytes((DESCR_TOTAL - 1) * DESCR_SIZE)
            out.write(table.ljust(offset - DESCR_OFFSET, b"\0"))
            with open(squashfs_path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            if out.tell() != file_size:
                raise SifError(f"{squashfs_path} changed while it was being copied")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def arch_name(code):
    for name, c in ARCH_CODES.items():
        if c == code:
            return name
    return repr(code)


def check(path):
    """Parse a SIF file; return a dict describing it and its primary system partition.

    Raises SifError if the file is not a SIF, or has no usable SquashFS root filesystem.
    """
    with open(path, "rb") as f:
        data_len = os.fstat(f.fileno()).st_size
        raw = f.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            raise SifError(f"{path}: too short for a SIF header ({len(raw)} bytes)")
        (launch, magic, version, arch_code, uuid, created, modified, free, total,
         doff, dsize, data_offset, data_size) = struct.unpack(HEADER_FMT, raw)
        if magic != MAGIC:
            raise SifError(f"{path}: not a SIF file (bad magic {magic!r})")
        if version != VERSION:
            raise SifError(f"{path}: unsupported SIF version {version!r}")
        if total < 0 or dsize != total * DESCR_SIZE or doff < HEADER_SIZE or doff + dsize > data_len:
            raise SifError(f"{path}: bad descriptor table (offset {doff}, size {dsize}, total {total})")
        f.seek(doff)
        table = f.read(dsize)

        objects = []
        for i in range(total):
            d = table[i * DESCR_SIZE:(i + 1) * DESCR_SIZE]
            (dtype, used, oid, group, link, offset, size, size_pad, ocreated, omodified,
             uid, gid) = struct.unpack_from(DESCR_FIXED_FMT, d)
            if not used:
                continue
            name = d[DESCR_FIXED_SIZE:DESCR_FIXED_SIZE + NAME_SIZE].split(b"\0", 1)[0]
            extra = d[DESCR_FIXED_SIZE + NAME_SIZE:]
            obj = {
                "type": dtype, "id": oid, "group": group & ~GROUP_MASK, "link": link,
                "offset": offset, "size": size, "size_with_padding": size_pad,
                "name": name.decode("utf-8", "replace"),
            }
            if dtype == DATA_PARTITION:
                fstype, parttype, parch = struct.unpack_from("<ii3s", extra)
                obj.update(fstype=fstype, parttype=parttype, arch=arch_name(parch))
            if offset < 0 or size < 0 or offset + size > data_len:
                raise SifError(f"{path}: object {oid} lies outside the file")
            objects.append(obj)

        prim = [o for o in objects if o["type"] == DATA_PARTITION and o["parttype"] == PARTTYPE_PRIMSYS]
        if not prim:
            raise SifError(f"{path}: no primary system partition (no root filesystem)")
        if len(prim) > 1:
            raise SifError(f"{path}: {len(prim)} primary system partitions")
        root = prim[0]
        if root["fstype"] != FSTYPE_SQUASHFS:
            raise SifError(f"{path}: root filesystem has fstype {root['fstype']}, not squashfs")
        f.seek(root["offset"])
        bytes_used = squashfs_bytes_used(f.read(SQUASHFS_SUPERBLOCK_SIZE),
                                         f"{path}: root filesystem at offset {root['offset']}")
        if bytes_used > root["size"]:
            raise SifError(f"{path}: SquashFS needs {bytes_used} bytes, partition has {root['size']}")

    return {
        "arch": arch_name(arch_code), "created": created, "modified": modified,
        "descriptors_total": total, "descriptors_free": free, "descriptors_offset": doff,
        "data_offset": data_offset, "data_size": data_size, "file_size": data_len,
        "objects": objects, "rootfs": root,
    }


def verify_copy(squashfs_path, sif_path):
    """Read SIF_PATH back and check that its root filesystem is SQUASHFS_PATH, byte for byte."""
    root = check(sif_path)["rootfs"]
    if root["size"] != os.path.getsize(squashfs_path):
        raise SifError(f"{sif_path}: read-back size mismatch")
    with open(squashfs_path, "rb") as a, open(sif_path, "rb") as b:
        b.seek(root["offset"])
        while True:
            chunk = a.read(1 << 20)
            if chunk != b.read(len(chunk)):
                raise SifError(f"{sif_path}: read-back content mismatch")
            if not chunk:
                return


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Wrap a SquashFS image in a SIF file (or check a SIF file with --check).")
    p.add_argument("--check", metavar="FILE.sif",
                   help="parse FILE.sif and print its root filesystem as KEY=VALUE lines")
    p.add_argument("squashfs", nargs="?", help="input SquashFS image")
    p.add_argument("out", nargs="?", help="output SIF file")
    p.add_argument("--arch", default=None,
                   help=f"architecture ({', '.join(ARCH_CODES)}); default: this host's")
    args = p.parse_args(argv)
    try:
        if args.check:
            if args.squashfs or args.out:
                p.error("--check takes no other arguments")
            info = check(args.check)
            root = info["rootfs"]
            print(f"arch={info['arch']}")
            print(f"objects={len(info['objects'])}")
            print(f"rootfs_offset={root['offset']}")
            print(f"rootfs_size={root['size']}")
            print(f"rootfs_arch={root['arch']}")
            print(f"rootfs_name={root['name']}")
            return 0
        if not args.squashfs or not args.out:
            p.error("need SQUASHFS and OUT.sif (or --check FILE.sif)")
        wrap(args.squashfs, args.out, args.arch or host_arch())
        verify_copy(args.squashfs, args.out)
        return 0
    except (SifError, OSError) as e:
        print(f"sif-wrap: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
