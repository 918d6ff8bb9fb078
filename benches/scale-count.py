#!/usr/bin/env python3
"""Count, from the strace -ff traces benches/scale-measure.sh writes, what one
node's launch of N ranks asks of the shared services: the image file (opens,
other metadata operations, reads and bytes), the directories above it and the
home directory (path lookups a parallel file system's metadata server may
see), the user database (NSS files, nscd/sssd sockets), and the processes and
threads it creates. One row per run directory; --json for the model.

    benches/scale-count.py [--json] [--image-dir DIR] [--home DIR] RUN_DIR...

A RUN_DIR holds trace.PID files (strace -ff -y -o RUN_DIR/trace) and
`image.sqfs`, the image the launch used; `fincore` (written by the measure
script: N, resident bytes before, after, file size) adds the bytes the page
cache had to fetch."""

import json
import os
import re
import sys

SYSCALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?|0x[0-9a-f]+)")
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
FDPATH = re.compile(r"\d+<([^>]*)>")
READS = {"read", "pread64", "preadv", "preadv2", "readv"}
# One open of the database file per lookup with NSS "files" (getpwuid_r,
# getgrgid_r...); /etc/nsswitch.conf is read once per process, not counted.
IDENTITY_FILES = {"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"}
IDENTITY_SOCKETS = ("/var/run/nscd/socket", "/run/nscd/socket", "/var/lib/sss/pipes",
                    "/run/systemd/userdb")
NEW_TASK = {"clone", "clone3", "fork", "vfork"}


def ancestors(path):
    """`path`'s directories from `/` down, as a set."""
    out, cur = set(), os.path.dirname(path)
    while True:
        out.add(cur)
        if cur == "/":
            return out
        cur = os.path.dirname(cur)


def count_run(run, home):
    image = os.path.join(run, "image.sqfs")
    above = ancestors(image)
    c = {"run": os.path.basename(run), "image_opens": 0, "image_path_ops": 0,
         "image_fd_stat": 0, "image_fadvise": 0, "image_fd_other": 0, "image_reads": 0, "image_bytes": 0, "image_mmaps": 0,
         "dir_lookups": 0, "home_ops": 0, "identity_opens": 0, "identity_connects": 0,
         "processes": 0, "threads": 0, "execs": {}, "syscalls": 0, "by_call": {}}
    threads, tasks = set(), set()
    harness = False
    for name in os.listdir(run):
        if not name.startswith("trace."):
            continue
        tasks.add(int(name.split(".")[1]))
        with open(os.path.join(run, name), errors="replace") as f:
            lines = f.readlines()
        # The harness (setpriv, env, sh): not the launch's.
        if any(line.startswith('execve("/usr/bin/setpriv"') for line in lines[:5]):
            harness = True
            continue
        if True:
            for line in lines:
                m = SYSCALL.match(line)
                if not m:
                    continue
                call, args, ret = m.groups()
                c["syscalls"] += 1
                ok = ret != "?" and not ret.startswith("-")
                if call in NEW_TASK and ok:
                    if "CLONE_THREAD" in args:
                        threads.add(int(ret, 0))
                    continue
                if call == "execve" and ok:
                    prog = os.path.basename(QUOTED.search(args).group(1))
                    c["execs"][prog] = c["execs"].get(prog, 0) + 1
                    continue
                paths = QUOTED.findall(args)
                fds = FDPATH.findall(args)
                if call == "connect":
                    if any(s in args for s in IDENTITY_SOCKETS):
                        c["identity_connects"] += 1
                    continue
                on_image = image in paths or image in fds
                if on_image:
                    key = call
                    c["by_call"][key] = c["by_call"].get(key, 0) + 1
                    if call in READS and image in fds:
                        c["image_reads"] += 1
                        c["image_bytes"] += max(int(ret), 0) if ok else 0
                    elif call in ("mmap",):
                        c["image_mmaps"] += 1
                    elif image in paths:
                        if call in ("open", "openat", "openat2", "creat"):
                            c["image_opens"] += 1
                        else:
                            c["image_path_ops"] += 1
                    elif call in ("fstat", "newfstatat", "statx"):
                        c["image_fd_stat"] += 1
                    elif call in ("fadvise64", "readahead"):
                        c["image_fadvise"] += 1
                    elif call not in ("close", "lseek", "fcntl", "dup", "dup2", "dup3"):
                        c["image_fd_other"] += 1
                    continue
                for p in paths:
                    if not p.startswith("/"):
                        continue
                    p = os.path.normpath(p)
                    if p in IDENTITY_FILES:
                        if call in ("open", "openat", "openat2"):
                            c["identity_opens"] += 1
                    elif p in above and p != "/":
                        c["dir_lookups"] += 1
                    elif home and (p == home or p.startswith(home + "/")):
                        c["home_ops"] += 1
    # The directories above the image (not "/"): what a per-directory count is per.
    c["image_depth"] = len(above - {"/"})
    c["threads"] = len(threads & tasks)
    c["processes"] = len(tasks - threads) - (1 if harness else 0)
    fc = os.path.join(run, "fincore")
    if os.path.exists(fc):
        _, before, after, size = open(fc).read().split()
        c["page_cache_fetched"] = int(after) - int(before)
        c["image_size"] = int(size)
    return c


def main(argv):
    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    home = None
    if "--home" in argv:
        i = argv.index("--home")
        home = os.path.realpath(argv[i + 1])
        del argv[i:i + 2]
    if "--image-dir" in argv:
        i = argv.index("--image-dir")
        del argv[i:i + 2]
    rows = [count_run(os.path.realpath(r), home) for r in argv]
    if as_json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return
    cols = ["run", "processes", "threads", "image_opens", "image_path_ops", "image_fd_stat",
            "image_fadvise", "dir_lookups", "image_reads", "image_bytes", "page_cache_fetched", "home_ops",
            "identity_opens", "identity_connects"]
    print(" ".join(cols))
    for r in rows:
        print(" ".join(str(r.get(k, "-")) for k in cols))
    for r in rows:
        print(f"{r['run']}: execs {r['execs']}; image calls {r['by_call']}; "
              f"{r['syscalls']} syscalls traced")


if __name__ == "__main__":
    main(sys.argv[1:])
