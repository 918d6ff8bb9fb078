#!/usr/bin/env python3
"""The launch of one image on many nodes, from the per-node counts measured
here (docs/scale.md): the load on the parallel file system's metadata server
and object storage, on the identity service and on the Slurm controller, and
the node count at which each becomes the limit, beside Singularity's failure
at 1024 nodes (singularity#4767) and pyxis/enroot's import times.

    benches/scale-model.py [--counts FILE] [--nodes N] [--ranks R] [--window S] ...

--counts takes `benches/scale-count.py --json` of runs of at least two rank
counts (benches/scale-measure.sh IMAGE 1 4 16 -- COMMAND); without it, the
counts of docs/scale.md's MPI-image run are used. Every capacity is an
assumption, given as an option with its default and source in --help;
`--check` runs the self-test. Python 3 standard library only."""

import argparse
import json
import math
import sys

# benches/scale-count.py --json of the run in docs/scale.md ("The counts"):
# benches/scale-measure.sh /var/tmp/rfake-static/mpi.sqfs 1 4 16 -- sh -c \
#   'cat /opt/mpi-test/mpi-test $(ldd ... libraries) >/dev/null'
# (first of three runs; the other two differ only in the bytes, see the doc),
# and one run of 64 ranks.
MEASURED = [
    {"ranks": 1, "processes": 7, "threads": 2, "image_opens": 1, "image_path_ops": 2,
     "image_fd_stat": 4, "dir_lookups": 5, "image_depth": 5, "page_cache_fetched": 5160960, "home_ops": 4,
     "identity_opens": 2, "identity_connects": 4, "image_size": 78454784},
    {"ranks": 4, "processes": 13, "threads": 2, "image_opens": 4, "image_path_ops": 8,
     "image_fd_stat": 13, "dir_lookups": 20, "image_depth": 5, "page_cache_fetched": 5136384, "home_ops": 16,
     "identity_opens": 8, "identity_connects": 16, "image_size": 78454784},
    {"ranks": 16, "processes": 37, "threads": 2, "image_opens": 16, "image_path_ops": 32,
     "image_fd_stat": 49, "dir_lookups": 80, "image_depth": 5, "page_cache_fetched": 5160960, "home_ops": 64,
     "identity_opens": 32, "identity_connects": 64, "image_size": 78454784},
    # The same with 64 ranks (benches/scale-measure.sh ... 64 -- ...), once.
    {"ranks": 64, "processes": 133, "threads": 2, "image_opens": 64, "image_path_ops": 128,
     "image_fd_stat": 193, "dir_lookups": 320, "image_depth": 5, "page_cache_fetched": 8249344, "home_ops": 256,
     "identity_opens": 128, "identity_connects": 256, "image_size": 78454784},
]

# What others published (docs/scale.md, "Sources").
SINGULARITY_4767 = {"ok_nodes": 512, "failed_nodes": 1024, "ranks": 64, "stagger_s": 30}
PYXIS = {"enroot_start_sqsh_s": 35, "unsquash_s": 7 * 60,            # NVIDIA/pyxis#24
         "import_first_s": 117.9, "import_cached_s": 15.8,           # nebius/soperator#2208
         "flock_fail_nodes": 64, "flock_timeout_s": 30}              # NVIDIA/enroot#154


def fit(rows, key):
    """Least-squares a + b * ranks through the measured rows: per node, and per rank."""
    xs = [r["ranks"] for r in rows]
    ys = [r[key] for r in rows]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


class Node:
    """One node's launch of `ranks` ranks, from the fitted counts."""

    def __init__(self, rows, ranks, first_rank_only=(), depth=None):
        self.ranks = ranks
        measured = rows[0].get("image_depth")
        self.depth_scale = depth / measured if depth and measured else 1.0
        self.first_rank_only = set(first_rank_only)
        self.fits = {k: fit(rows, k) for k in rows[0] if k not in ("ranks", "run")
                     and isinstance(rows[0][k], (int, float))}

    def at(self, key, ranks=None):
        a, b = self.fits[key]
        if key == "dir_lookups":
            a, b = a * self.depth_scale, b * self.depth_scale
        if ranks is None:
            ranks = 1 if key in self.first_rank_only else self.ranks
        return max(a + b * ranks, 0.0)


def limit(capacity_per_s, window_s, per_node):
    """Nodes a service absorbs in the window before it is over capacity."""
    return math.inf if per_node <= 0 else capacity_per_s * window_s / per_node


def model(args, rows):
    # What if only the first rank of a node opened the image, read the config and
    # looked the user up (the joined members use the keeper's container anyway)?
    # Not what rfake does today: docs/scale.md, "What would move the limits".
    per_rank_keys = ("image_opens", "image_path_ops", "image_fd_stat", "dir_lookups",
                     "home_ops", "identity_opens", "identity_connects")
    node = Node(rows, args.ranks, per_rank_keys if args.first_rank_only else (), args.depth)
    n = args.nodes
    out = {"nodes": n, "ranks": args.ranks, "window_s": args.window}
    # Metadata server. Uncached: every metadata call on the image's file system is
    # one RPC. Cached (what a Lustre client does with its LDLM locks): a path looked
    # up or stat'ed once on the node is answered locally; each open() is still an RPC.
    md_keys = ("image_opens", "image_path_ops", "image_fd_stat", "dir_lookups")
    # The directories resolved are those above the image: measured per directory,
    # counted for an image --depth directories deep on the parallel file system.
    md_uncached = sum(node.at(k) for k in md_keys)
    md_cached = node.at("image_opens") + sum(node.at(k, 1) for k in md_keys[1:])
    out["mds_ops_per_node"] = {"uncached": md_uncached, "cached": md_cached}
    out["mds_ops_total"] = {k: v * n for k, v in out["mds_ops_per_node"].items()}
    out["mds_ops_per_s"] = {k: v / args.window for k, v in out["mds_ops_total"].items()}
    out["mds_limit_nodes"] = {k: limit(args.mds_ops, args.window, v)
                              for k, v in out["mds_ops_per_node"].items()}
    # Home directory (often NFS): the user's config file and rendezvous secret.
    out["home_ops_total"] = node.at("home_ops") * n
    # Object storage: each node's page cache fetches the blocks the launch touches,
    # once per node (one image server per node, whatever the rank count).
    per_node_bytes = node.at("page_cache_fetched")
    total = per_node_bytes * n
    bw = args.ost_bw * args.stripes
    out["ost_bytes_per_node"] = per_node_bytes
    out["ost_bytes_total"] = total
    out["ost_seconds"] = total / bw
    out["ost_limit_nodes"] = limit(bw, args.window, per_node_bytes)
    # Identity service. Each rank looks the user up (getpwuid + getgrgid, counted as
    # opens of /etc/passwd and /etc/group); a node-local cache (sssd, nscd) turns
    # that into one query per lookup per node.
    per_rank = node.at("identity_opens") / args.ranks
    uncached = node.at("identity_opens")
    cached = node.at("identity_opens", 1)
    out["identity_per_node"] = {"uncached": uncached, "cached": cached}
    out["identity_total"] = {k: v * n for k, v in out["identity_per_node"].items()}
    out["identity_per_s"] = {k: v / args.window for k, v in out["identity_total"].items()}
    # Theta's identity service (singularity#4767) took 512 x 64 Singularity launches
    # spread over 30 s and failed at 1024 x 64. With L lookups per Singularity process
    # its capacity lies between these rates.
    s = SINGULARITY_4767
    lo = s["ok_nodes"] * s["ranks"] * args.singularity_lookups / s["stagger_s"]
    hi = s["failed_nodes"] * s["ranks"] * args.singularity_lookups / s["stagger_s"]
    out["theta_identity_capacity_per_s"] = (lo, hi)
    out["identity_limit_nodes"] = {
        k: (limit(lo, args.window, v), limit(hi, args.window, v))
        for k, v in out["identity_per_node"].items()}
    out["identity_per_rank"] = per_rank
    # Slurm controller: rfake makes no network connection (counted: no AF_INET/
    # AF_INET6 connect in the traces), so a step costs slurmctld what it costs
    # without rfake: one step-create RPC from srun; the launch fans out over the
    # slurmd tree (TreeWidth 50: 10,000 nodes in 3 hops) without it.
    out["slurmctld_rpcs_added_by_rfake"] = 0
    out["slurmd_tree_hops"] = math.ceil(math.log(n, args.tree_width)) if n > 1 else 0
    # Processes and threads per node.
    out["processes_per_node"] = node.at("processes")
    out["threads_per_node"] = node.at("threads")
    # pyxis/enroot: no in-place use of a shared image; each node imports (or
    # unsquashes) the whole image. Published per-node times, bytes from here.
    size = rows[0].get("image_size", 0)
    out["pyxis"] = {"bytes_total": size * n, "seconds_per_node": PYXIS,
                    "ost_seconds": size * n / bw}
    return out


def fmt_n(x):
    if x == math.inf:
        return "no limit"
    return f"{x:,.0f}"


def fmt_b(x):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if x < 1000 or unit == "TB":
            return f"{x:,.1f} {unit}"
        x /= 1000


def report(args, m):
    w = args.window
    print(f"{m['nodes']:,} nodes x {m['ranks']} ranks, one image, ranks started within "
          f"{w:g} s (assumed)")
    print()
    print("metadata server (image file and the directories above it):")
    for k in ("uncached", "cached"):
        print(f"  {k:9} {m['mds_ops_per_node'][k]:8,.0f} ops/node  "
              f"{m['mds_ops_total'][k]:>12,.0f} ops  {m['mds_ops_per_s'][k]:>11,.0f} ops/s  "
              f"limit at {args.mds_ops:,.0f} ops/s: {fmt_n(m['mds_limit_nodes'][k])} nodes")
    print(f"  home directory: {m['home_ops_total']:,.0f} ops (config file, rendezvous secret)")
    print("object storage:")
    print(f"  {fmt_b(m['ost_bytes_per_node'])}/node, {fmt_b(m['ost_bytes_total'])} in all: "
          f"{m['ost_seconds']:.1f} s at {args.stripes} stripe(s) x {args.ost_bw / 1e9:g} GB/s; "
          f"within the window up to {fmt_n(m['ost_limit_nodes'])} nodes")
    print("identity service:")
    lo, hi = m["theta_identity_capacity_per_s"]
    for k in ("uncached", "cached"):
        a, b = m["identity_limit_nodes"][k]
        print(f"  {k:9} {m['identity_per_node'][k]:5,.0f} lookups/node  "
              f"{m['identity_total'][k]:>10,.0f} lookups  {m['identity_per_s'][k]:>10,.0f}/s  "
              f"Theta's capacity ({lo:,.0f}-{hi:,.0f}/s) reached at {fmt_n(a)}-{fmt_n(b)} nodes")
    print(f"  ({m['identity_per_rank']:.2f} lookups per rank; Singularity 3.2 assumed to "
          f"make {args.singularity_lookups:g} per process)")
    print("Slurm controller:")
    print(f"  RPCs added by rfake: {m['slurmctld_rpcs_added_by_rfake']}; "
          f"launch fan-out {m['slurmd_tree_hops']} hops at TreeWidth {args.tree_width}")
    print(f"node: {m['processes_per_node']:.0f} processes, {m['threads_per_node']:.0f} threads "
          f"created per launch")
    p = m["pyxis"]
    print(f"pyxis/enroot extracting (before use_squashfuse): whole image per node, {fmt_b(p['bytes_total'])} in all "
          f"({p['ost_seconds']:.1f} s of object storage); published per-node import "
          f"{PYXIS['import_first_s']:.0f} s first, {PYXIS['import_cached_s']:.0f} s cached, "
          f"{PYXIS['unsquash_s']:.0f} s to unsquash a local .sqsh")
    limits = {
        "identity service, no node cache": m["identity_limit_nodes"]["uncached"][0],
        "metadata server, uncached": m["mds_limit_nodes"]["uncached"],
        "metadata server, cached": m["mds_limit_nodes"]["cached"],
        "object storage bandwidth": m["ost_limit_nodes"],
        "identity service, node cache": m["identity_limit_nodes"]["cached"][0],
    }
    print()
    print("limits, first reached first:")
    for name, nodes in sorted(limits.items(), key=lambda kv: kv[1]):
        print(f"  {fmt_n(nodes):>9} nodes  {name}")


def check():
    rows = [{"ranks": 1, "x": 3}, {"ranks": 4, "x": 9}, {"ranks": 16, "x": 33}]
    a, b = fit(rows, "x")
    assert abs(a - 1) < 1e-9 and abs(b - 2) < 1e-9, (a, b)
    assert limit(100, 5, 10) == 50 and limit(1, 1, 0) == math.inf
    args = parse([])
    m = model(args, MEASURED)
    # 64 ranks: 2 lookups each, 1 image open each.
    assert round(m["identity_per_node"]["uncached"]) == 128, m["identity_per_node"]
    assert round(m["identity_per_node"]["cached"]) == 2
    assert round(m["mds_ops_per_node"]["cached"]) >= 64
    print("scale-model: self-test passed")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", help="benches/scale-count.py --json output")
    p.add_argument("--nodes", type=int, default=10000)
    p.add_argument("--ranks", type=int, default=64, help="ranks per node")
    p.add_argument("--window", type=float, default=5.0,
                   help="seconds over which the ranks start (assumed; default 5)")
    p.add_argument("--mds-ops", type=float, default=100e3,
                   help="metadata ops/s of the image's metadata server (default 100k: between "
                        "the 15-27k creates/s and 400-500k stats/s mdtest measured on one "
                        "Lustre MDT in Dell's HPC Lustre white papers)")
    p.add_argument("--depth", type=int, default=4,
                   help="directories above the image on the parallel file system, its mount "
                        "point included (default 4: /lustre/proj/group/images/app.sqfs)")
    p.add_argument("--ost-bw", type=float, default=2e9,
                   help="bytes/s one object storage target serves (assumed; default 2 GB/s)")
    p.add_argument("--stripes", type=int, default=1,
                   help="stripe count of the image file (lfs setstripe -c; default 1)")
    p.add_argument("--singularity-lookups", type=float, default=2.0,
                   help="identity lookups per Singularity 3.2 process (not measured here; "
                        "default 2, as rfake)")
    p.add_argument("--tree-width", type=int, default=50, help="slurm.conf TreeWidth (default 50)")
    p.add_argument("--first-rank-only", action="store_true",
                   help="what if only a node's first rank opened the image, read the "
                        "configuration and looked the user up (not rfake today)")
    p.add_argument("--json", action="store_true", help="print the model as JSON")
    p.add_argument("--check", action="store_true", help="run the self-test")
    return p.parse_args(argv)


def main(argv):
    args = parse(argv)
    if args.check:
        check()
        return
    rows = MEASURED
    if args.counts:
        rows = json.load(open(args.counts))
        for r in rows:
            r.setdefault("ranks", int(r["run"].rsplit("-", 1)[1]))
        if len({r["ranks"] for r in rows}) < 2:
            sys.exit(f"scale-model: {args.counts}: need runs of at least two rank counts")
    m = model(args, rows)
    if args.json:
        json.dump(m, sys.stdout, indent=1, default=str)
        print()
    else:
        report(args, m)


if __name__ == "__main__":
    main(sys.argv[1:])
