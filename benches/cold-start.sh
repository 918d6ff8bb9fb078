#!/bin/bash
# Cold-start benchmark (issue 18): the first launch of an image on a node against an unpacked
# directory, the kernel's squashfs and squashfuse_ll, in alternating rounds; one summary line
# per target, then the extra measurements in benches/cold-start.d/.
#
#   sudo benches/cold-start.sh --as-user USER [OPTIONS]
#
# This is a benchmark, not a test: it measures and reports; "met"/"NOT met" do not change the
# exit status. Root is needed for the kernel squashfs lines, the slow device (dm-delay), the
# FUSE tracepoints and dropping the page cache; everything else runs as USER (runuser).
#
# Each round times every line of a target once (hyperfine -N, --runs per line) and gives one
# ratio per target; the summary shows the median of the rounds' ratios and their range
# (min-max). Rounds alternate the targets (1 2 3 4 5, 1 2 3 4 5, ...), so a noisy minute of
# the machine shows as spread instead of bias.
#
#   R  FUSE requests of one cold launch, by opcode (the kernel's fuse_request_send tracepoint
#      in a private trace instance): `true` from the demo image, the python import storm.
#   1  `true` from the busybox demo image: rfake builtin cold (warm_linger = 0: a fresh mount
#      and server per launch) and warm (a lingering mount of a copy of the image) against
#      ch-run on the unpacked directory. Targets: cold <= 2.5, warm <= 1.2.
#   2  the python import storm (python3 -c 'import json, email, http.client, ...') in the
#      Debian image, cold and warm, against ch-run on the Debian directory. Targets: cold <=
#      1.5, warm <= 1.1.
#   3  warm `tar -cf - -C / usr | cat >/dev/null` (the second one in one container, timed
#      inside with date +%s%N): rfake builtin against the kernel's squashfs (as root, loop
#      mount, chroot). Target: <= 1.1 in every round.
#   4  a slow device: the Debian image on ext4 on a loop device whose reads are throttled
#      (cgroup v1 blkio: --iops reads/s and --bps bytes/s; this VM's kernel has no
#      device-mapper, so no dm-delay); before each launch the image's pages are dropped
#      (posix_fadvise DONTNEED; the kernel squashfs' own loop device goes with its mount). Time to the first byte of output of
#      the import storm followed by print(): rfake builtin cold, rfake driving squashfuse_ll,
#      kernel squashfs. Target: builtin <= 1.0 x kernel.
#   5  the built-in server's peak RSS and CPU time for a cold import storm and a cold `tar`
#      of /usr: sampled from /proc every 5 ms (VmHWM, utime+stime; works for any rfake), and
#      rfake's own debug line (wait4 when it reaps the server) where the binary has it. Target: peak <= 76 MiB with the
#      default 64 MiB cache (the last round's figure before issue 18).
#
# With --before BIN, the rfake lines of 1, 2, 4 and 5 are also run with BIN (another build,
# say main's), in the same hyperfine run, and shown as "before".
#
# Extra measurements: every executable benches/cold-start.d/*.sh runs after the rounds, as
# root, with the environment below; each prints its own one-line summaries (lines starting
# with "target", "cache", "timeline" or "startup" are copied into the summary) and may write
# more into $CS_OUT.
#   CS_USER CS_RFAKE CS_RFAKE_BEFORE CS_DEMO CS_DEMO_DIR CS_DEBIAN CS_DEBIAN_DIR CS_OUT
#   CS_ROUNDS CS_RUNS CS_STORM (the python code of the import storm) CS_SCRATCH (a scratch
#   directory readable by CS_USER) CS_ENV (a file of RFAKE_CONFIG/RFAKE_USER_CONFIG lines for a
#   cold launch: `env $(cat $CS_ENV) rfake exec ...`)
#
# Options:
#   --as-user USER     run the unprivileged lines as USER (required)
#   --only LIST        comma-separated parts: R,1,2,3,4,5,extra (default all)
#   --rounds N         alternating rounds (default 5)
#   --runs N           hyperfine runs per line per round in 1 and 2, launches per line per
#                      round in 4 (default 10)
#   --before BIN       also time this rfake binary (see above)
#   --iops N           reads per second of the slow device in 4 (default 300)
#   --bps N            bytes per second of the slow device in 4 (default 40000000)
#   --demo IMG         busybox demo image (default /var/tmp/rfake-static/images/demo.sqfs)
#   --demo-dir DIR     its directory (default: IMG without .sqfs)
#   --debian IMG       Debian image with python3 (default target/bench/debian.sqfs)
#   --debian-dir DIR   its directory (default: IMG without .sqfs)
#   --out DIR          results (default target/bench): cold-start-STAMP.txt (the summary) and
#                      cold-start-STAMP/ (raw numbers, hyperfine exports, logs)
#
# Environment: RFAKE_BIN (default target/release/rfake), CH_RUN (default ch-run on PATH).
#
# Exit status: 0 when measured; 2 when something needed is missing (root, USER, rfake,
# hyperfine, ch-run, an image, the blkio cgroup for 4); 1 on other errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/.." && pwd)

die() {
    echo "cold-start.sh: error: $*" >&2
    exit 1
}
missing() {
    echo "cold-start.sh: $*" >&2
    exit 2
}
note() {
    echo "cold-start.sh: $*" >&2
}
usage() {
    sed -n '/^# Options:/,/^set -euo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}
number() { # OPTION VALUE MIN
    [[ $2 =~ ^[0-9]+$ && $2 -ge $3 ]] || { echo "cold-start.sh: $1 needs a number >= $3" >&2; usage; }
}

user=""
only="R,1,2,3,4,5,extra"
rounds=5
runs=10
before=""
iops=300
bps=40000000
demo=/var/tmp/rfake-static/images/demo.sqfs
demo_dir=""
debian="$project/target/bench/debian.sqfs"
debian_dir=""
outdir="$project/target/bench"
while [[ $# -gt 0 ]]; do
    case $1 in
        --as-user) [[ $# -ge 2 ]] || usage; user=$2; shift 2 ;;
        --only) [[ $# -ge 2 ]] || usage; only=$2; shift 2 ;;
        --rounds) [[ $# -ge 2 ]] || usage; number "$1" "$2" 1; rounds=$2; shift 2 ;;
        --runs) [[ $# -ge 2 ]] || usage; number "$1" "$2" 2; runs=$2; shift 2 ;;
        --before) [[ $# -ge 2 ]] || usage; before=$2; shift 2 ;;
        --iops) [[ $# -ge 2 ]] || usage; number "$1" "$2" 1; iops=$2; shift 2 ;;
        --bps) [[ $# -ge 2 ]] || usage; number "$1" "$2" 4096; bps=$2; shift 2 ;;
        --demo) [[ $# -ge 2 ]] || usage; demo=$2; shift 2 ;;
        --demo-dir) [[ $# -ge 2 ]] || usage; demo_dir=$2; shift 2 ;;
        --debian) [[ $# -ge 2 ]] || usage; debian=$2; shift 2 ;;
        --debian-dir) [[ $# -ge 2 ]] || usage; debian_dir=$2; shift 2 ;;
        --out) [[ $# -ge 2 ]] || usage; outdir=$2; shift 2 ;;
        -h | --help) usage ;;
        *) echo "cold-start.sh: unknown argument $1" >&2; usage ;;
    esac
done
wants() { [[ ",$only," == *",$1,"* ]]; }

# --- what is needed ------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || missing "run as root with --as-user USER (root: kernel squashfs," \
    "dm-delay, tracepoints, dropping caches; USER: everything else)"
[[ -n $user ]] || missing "--as-user USER is required"
id "$user" >/dev/null 2>&1 || missing "no user $user"
rfake=$(realpath -e "${RFAKE_BIN:-$project/target/release/rfake}") ||
    missing "rfake binary not found: cargo build --release, or set RFAKE_BIN"
[[ -z $before ]] || before=$(realpath -e "$before") || missing "--before: no such binary"
command -v hyperfine >/dev/null || missing "hyperfine not found: apt-get install hyperfine"
command -v runuser >/dev/null || missing "runuser not found (util-linux)"
ch_run=$(command -v "${CH_RUN:-ch-run}") ||
    missing "ch-run not found: apt-get install charliecloud-runtime (or set CH_RUN)"
[[ -f $demo ]] || missing "demo image $demo not found (--demo)"
demo=$(realpath "$demo")
demo_dir=$(realpath -e "${demo_dir:-${demo%.sqfs}}") || missing "no directory for $demo (--demo-dir)"
if wants 2 || wants 3 || wants 4 || wants 5 || wants R; then
    [[ -f $debian ]] || missing "Debian image $debian not found (--debian): a Debian 12 root" \
        "with python3, made into a SquashFS (rfake build or mksquashfs)"
    debian=$(realpath "$debian")
    debian_dir=$(realpath -e "${debian_dir:-${debian%.sqfs}}") ||
        missing "no directory for $debian (--debian-dir)"
fi
if wants 4; then
    blkio=/sys/fs/cgroup/blkio
    [[ -f $blkio/blkio.throttle.read_iops_device ]] ||
        missing "no cgroup v1 blkio throttling at $blkio (needed for 4; --only without 4)"
    command -v squashfuse_ll >/dev/null || missing "squashfuse_ll not found: apt-get install squashfuse"
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$outdir"
outdir=$(realpath "$outdir")
raw="$outdir/cold-start-$stamp"
summary="$outdir/cold-start-$stamp.txt"
mkdir -p "$raw"
chown "$user" "$raw" # hyperfine, run as USER, writes its exports there
# The scratch directory holds the user's configuration and image copies; USER reads it.
scratch=$(mktemp -d /var/tmp/rfake-cold-start.XXXXXX)
chmod 755 "$scratch"
slow_cg="" slow_loop="" slow_mnt=""
cleanup() {
    if [[ -n $slow_cg ]]; then
        echo $$ >"$blkio/tasks" 2>/dev/null || true
        rmdir "$slow_cg" 2>/dev/null || true
    fi
    [[ -z $slow_mnt ]] || umount "$slow_mnt" 2>/dev/null || true
    [[ -z $slow_loop ]] || losetup -d "$slow_loop" 2>/dev/null || true
    rm -rf "$scratch"
    # ch-run on a SquashFS file leaves its (empty) mount point directory behind in /var/tmp;
    # the tests refuse to run with a stray entry of the test user's there.
    local chdir="/var/tmp/$user.ch"
    if [[ -d $chdir && $(stat -c %U "$chdir") == "$user" ]]; then
        rmdir "$chdir/mnt" "$chdir" 2>/dev/null || true
    fi
}
trap cleanup EXIT

storm='import json, email, http.client, xml.dom.minidom, asyncio, decimal, sqlite3, unittest, argparse, logging, subprocess'
: >"$scratch/site.toml"
printf 'image_server = "builtin"\nwarm_linger = 0\n' >"$scratch/cold.toml"
printf 'image_server = "builtin"\nwarm_linger = 30\n' >"$scratch/warm.toml"
printf 'image_server = "squashfuse"\nwarm_linger = 0\n' >"$scratch/squashfuse.toml"
env_of() { echo "RFAKE_CONFIG=$scratch/site.toml RFAKE_USER_CONFIG=$scratch/$1.toml"; }
env_of cold >"$scratch/cold.env"
# Warm lines use copies: a cold launch must not join their lingering mount.
copy_image() { # IMG NAME
    cp "$1" "$scratch/$2"
    chmod 644 "$scratch/$2"
    echo "$scratch/$2"
}
chmod -R a+rX "$scratch"

as_user() { runuser -u "$user" -- "$@"; }

{
    echo "# rfake cold-start benchmark (issue 18), $stamp"
    echo "host:   $(uname -srm), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "user:   $user; rounds $rounds, runs $runs per line per round"
    echo "rfake:  $rfake ($("$rfake" --version 2>&1 | sed -n 2p))"
    [[ -z $before ]] || echo "before: $before ($("$before" --version 2>&1 | sed -n 2p))"
    echo "ch-run: $ch_run ($(USER=$user "$ch_run" --version 2>&1 | head -n1))"
    echo "demo:   $demo, $demo_dir"
    [[ -z $debian_dir ]] || echo "debian: $debian ($(stat -c %s "$debian") bytes), $debian_dir"
    echo
} | tee "$summary"

# --- R: FUSE requests ----------------------------------------------------------------------
# Run ARGV as USER with the fuse tracepoints on for it and its descendants only (set_event_pid
# and event-fork: other users of FUSE on the machine are not counted); print the requests of
# each connection opened (INIT) during the run, by opcode.
count_requests() { # LABEL ARGV...
    local label=$1
    shift
    local t=/sys/kernel/tracing/instances/rfake-cold-start-$$
    [[ -d /sys/kernel/tracing/events/fuse ]] || { note "no fuse tracepoints: R left out"; return 0; }
    mkdir "$t"
    echo 8192 >"$t/buffer_size_kb"
    echo 1 >"$t/options/event-fork"
    echo 1 >"$t/events/fuse/fuse_request_send/enable"
    # shellcheck disable=SC2016 # $$ is the inner shell's
    sh -c 'echo $$ >"$1/set_event_pid" && shift && exec "$@"' sh "$t" \
        runuser -u "$user" -- "$@" >/dev/null 2>>"$raw/requests.log" || true
    echo 0 >"$t/events/fuse/fuse_request_send/enable"
    cp "$t/trace" "$raw/requests-${label// /-}.trace"
    rmdir "$t"
    python3 - "$raw/requests-${label// /-}.trace" "$label" <<'EOF'
import collections, re, sys
conns, opened = collections.defaultdict(collections.Counter), []
for line in open(sys.argv[1]):
    m = re.search(r"connection (\d+) req \d+ opcode \d+ \((\w+)\)", line)
    if m:
        c, op = m.group(1), m.group(2).removeprefix("FUSE_")
        conns[c][op] += 1
        if op == "INIT":
            opened.append(c)
for c in opened:
    k = conns[c]
    ops = " ".join(f"{o} {n}" for o, n in k.most_common())
    print(f"requests  {sys.argv[2]:<28} {sum(k.values()):5d}: {ops}")
EOF
}

part_requests() {
    local r
    for r in rfake ${before:+before}; do
        local bin=$rfake
        [[ $r == rfake ]] || bin=$before
        count_requests "$r cold true" env $(env_of cold) "$bin" exec "$demo" /bin/true
        count_requests "$r cold python" env $(env_of cold) "$bin" exec "$debian" python3 -c "$storm"
    done | tee -a "$summary"
}

# --- 1 and 2: hyperfine rounds -------------------------------------------------------------
# One hyperfine run as USER: ARGS are NAME CMD pairs; exports to $raw/T-roundN.json.
hyper() { # T ROUND NAME CMD [NAME CMD ...]
    local t=$1 round=$2
    shift 2
    local args=(-N --warmup 1 --runs "$runs" --export-json "$raw/$t-round$round.json" --style none)
    while [[ $# -gt 0 ]]; do
        args+=(--command-name "$1" "$2")
        shift 2
    done
    as_user hyperfine "${args[@]}" >>"$raw/hyperfine.log" 2>&1 ||
        die "hyperfine failed (part $t, round $round): see $raw/hyperfine.log"
}

launch_lines() { # IMAGE WARM_COPY_PREFIX CMD...: NAME CMD pairs for rfake (and before)
    local image=$1 prefix=$2
    shift 2
    local cmd
    cmd=$(printf '%q ' "$@")
    echo "rfake cold"
    echo "env $(env_of cold) $rfake exec $image $cmd"
    echo "rfake warm"
    echo "env $(env_of warm) $rfake exec $scratch/$prefix-warm.sqfs $cmd"
    if [[ -n $before ]]; then
        echo "before cold"
        echo "env $(env_of cold) $before exec $image $cmd"
        echo "before warm"
        echo "env $(env_of warm) $before exec $scratch/$prefix-before-warm.sqfs $cmd"
    fi
}

part_hyper() { # T ROUND
    local t=$1 round=$2 lines=()
    if [[ $t == 1 ]]; then
        mapfile -t lines < <(launch_lines "$demo" demo /bin/true)
        hyper 1 "$round" "${lines[@]}" \
            "ch-run dir" "$ch_run $demo_dir -- /bin/true" \
            "ch-run sqfs" "$ch_run $demo -- /bin/true"
    else
        mapfile -t lines < <(launch_lines "$debian" debian python3 -c "$storm")
        hyper 2 "$round" "${lines[@]}" \
            "ch-run dir" "$ch_run $debian_dir -- python3 -c $(printf '%q' "$storm")"
    fi
}

# --- 3: warm tar ---------------------------------------------------------------------------
tar_twice='tar -cf - -C / usr | cat >/dev/null; s=$(date +%s%N); tar -cf - -C / usr | cat >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 ))'
# sh -c "$kernel_mount" sh IMAGE MNT CMD...: mount IMAGE (loop, read-only) on MNT with the
# host's /dev bound in, run CMD chrooted there (in a mount namespace of its own: unshare -m).
kernel_mount='mount -t squashfs -o loop,ro "$1" "$2" && mount --rbind /dev "$2/dev" && m=$2 && shift 2 && exec chroot "$m" "$@"'
kernel_run() { # IMAGE CMD...: as root, the image mounted by the kernel, CMD in a chroot
    local image=$1
    shift
    local mnt
    mnt=$(mktemp -d "$scratch/kmnt.XXXXXX")
    unshare -m sh -c "$kernel_mount" sh "$image" "$mnt" "$@"
    rmdir "$mnt"
}
part_tar() { # ROUND
    local round=$1 r k
    r=$(as_user env $(env_of cold) "$rfake" exec "$debian" sh -c "$tar_twice")
    k=$(kernel_run "$debian" sh -c "$tar_twice")
    echo "$round rfake $r kernel $k" >>"$raw/3-tar.txt"
}

# --- 4: slow device ------------------------------------------------------------------------
slow_setup() {
    local size=$(($(stat -c %s "$debian") + (64 << 20)))
    truncate -s "$size" "$scratch/slow.img"
    slow_loop=$(losetup -f --show "$scratch/slow.img")
    mkfs.ext4 -q "$slow_loop"
    slow_mnt="$scratch/slow"
    mkdir -p "$slow_mnt"
    mount "$slow_loop" "$slow_mnt"
    cp "$debian" "$slow_mnt/debian.sqfs"
    chmod 755 "$slow_mnt"
    chmod 644 "$slow_mnt/debian.sqfs"
    sync
    # This script and all it starts from now on read the loop device at the throttled rate
    # (other devices are not limited).
    slow_cg="$blkio/rfake-cold-start-$$"
    mkdir "$slow_cg"
    local dev
    dev=$(stat -L -c '%t:%T' "$slow_loop")
    dev="$((16#${dev%:*})):$((16#${dev#*:}))"
    echo "$dev $iops" >"$slow_cg/blkio.throttle.read_iops_device"
    echo "$dev $bps" >"$slow_cg/blkio.throttle.read_bps_device"
    echo $$ >"$slow_cg/tasks"
}
# Drop the image's pages (clean after the sync): posix_fadvise(DONTNEED).
drop_image() {
    python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$slow_mnt/debian.sqfs"
}
# Milliseconds from the spawn of ARGV to the first byte on its stdout (then it runs to its end).
first_byte='import subprocess, sys, time
t = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
first = p.stdout.read(1)
d = time.monotonic() - t
p.stdout.read(); p.wait()
if p.returncode or not first:
    sys.exit(f"{sys.argv[1:]}: status {p.returncode}, output {first!r}")
print(f"{d * 1000:.1f}")'
part_slow() { # ROUND
    local round=$1 i line name ms
    local img="$slow_mnt/debian.sqfs" code="$storm; print('ready')"
    for ((i = 0; i < runs; i++)); do
        for line in rfake squashfuse kernel ${before:+before}; do
            drop_image
            case $line in
                rfake) ms=$(as_user python3 -c "$first_byte" env $(env_of cold) "$rfake" exec "$img" python3 -c "$code") ;;
                before) ms=$(as_user python3 -c "$first_byte" env $(env_of cold) "$before" exec "$img" python3 -c "$code") ;;
                squashfuse) ms=$(as_user python3 -c "$first_byte" env $(env_of squashfuse) "$rfake" exec "$img" python3 -c "$code") ;;
                kernel)
                    local mnt
                    mnt=$(mktemp -d "$scratch/kmnt.XXXXXX")
                    ms=$(python3 -c "$first_byte" unshare -m sh -c "$kernel_mount" \
                        sh "$img" "$mnt" python3 -c "$code")
                    rmdir "$mnt"
                    ;;
            esac
            echo "$round $line $ms" >>"$raw/4-slow.txt"
        done
    done
}

# --- 5: memory and CPU of the server -------------------------------------------------------
# Run ARGV as USER and sample its server (processes named rfake-fuse started by it) every 5 ms
# from /proc: the highest VmHWM and the last utime+stime seen (the server is killed at the
# end, idle by then). Prints "PEAK_KIB CPU_S".
sampler='import os, subprocess, sys, time
hz = os.sysconf("SC_CLK_TCK")
before = set(os.listdir("/proc"))
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=open(os.environ["LOG"], "w"))
peak, cpu = {}, {}
while True:
    done = p.poll() is not None
    for pid in set(os.listdir("/proc")) - before:
        try:
            if open(f"/proc/{pid}/comm").read().strip() != "rfake-fuse":
                continue
            st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            hwm = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")]
        except OSError:
            continue
        cpu[pid] = (int(st[11]) + int(st[12])) / hz
        if hwm:
            peak[pid] = max(peak.get(pid, 0), int(hwm[0].split()[1]))
    if done:
        break
    time.sleep(0.005)
if p.returncode:
    sys.exit(f"status {p.returncode}")
print(max(peak.values(), default=0), f"{sum(cpu.values()):.3f}")'
server_usage() { # LABEL BIN ARGV...
    local label=$1 bin=$2 log sampled exact
    shift 2
    log="$raw/5-$label.log"
    sampled=$(as_user env LOG="$log" python3 -c "$sampler" env $(env_of cold) \
        RFAKE_LOG=rfake::image_server=debug "$bin" exec "$debian" "$@") ||
        die "$label failed: see $log"
    # rfake's own line (wait4 of the killed server), when this rfake has it.
    exact=$(grep -o 'peak RSS [0-9]* KiB, CPU [0-9.]* s user [0-9.]* s system' "$log" | tail -n1) || true
    echo "$label sampled $sampled exact ${exact:-none}" >>"$raw/5-usage.txt"
}
part_usage() { # ROUND
    local round=$1 r
    for r in rfake ${before:+before}; do
        local bin=$rfake
        [[ $r == rfake ]] || bin=$before
        server_usage "$round-$r-python" "$bin" python3 -c "$storm"
        server_usage "$round-$r-tar" "$bin" sh -c 'tar -cf - -C / usr | cat >/dev/null'
    done
}

# --- run -----------------------------------------------------------------------------------
if wants R; then
    part_requests
fi
if wants 1 || wants 2; then
    copy_image "$demo" demo-warm.sqfs >/dev/null
    [[ -z $before ]] || copy_image "$demo" demo-before-warm.sqfs >/dev/null
    if wants 2; then
        copy_image "$debian" debian-warm.sqfs >/dev/null
        [[ -z $before ]] || copy_image "$debian" debian-before-warm.sqfs >/dev/null
    fi
fi
wants 4 && slow_setup
for ((round = 1; round <= rounds; round++)); do
    note "round $round of $rounds"
    wants 1 && part_hyper 1 "$round"
    wants 2 && part_hyper 2 "$round"
    wants 3 && part_tar "$round"
    wants 4 && part_slow "$round"
    wants 5 && part_usage "$round"
done

python3 - "$raw" "$rounds" <<'EOF' | tee -a "$summary"
import json, os, re, statistics as st, sys
from collections import defaultdict

raw, rounds = sys.argv[1], int(sys.argv[2])

def spread(xs, fmt="{:.2f}"):
    xs = sorted(xs)
    return (fmt.format(st.median(xs)) + " (" + fmt.format(xs[0]) + "-" + fmt.format(xs[-1])
            + f", {len(xs)} rounds)")

def verdict(xs, target, every=False):
    x = max(xs) if every else st.median(xs)
    return f"target <= {target}: {'met' if x <= target else 'NOT met'}"

def hyper(t):
    out = []
    for r in range(1, rounds + 1):
        p = f"{raw}/{t}-round{r}.json"
        if os.path.exists(p):
            out.append({x["command"]: x["median"] * 1000 for x in json.load(open(p))["results"]})
    return out

for t, what, cold_t, warm_t in (("1", "true, demo", 2.5, 1.2), ("2", "python storm", 1.5, 1.1)):
    rs = hyper(t)
    if not rs:
        continue
    base = "ch-run dir"
    ms = lambda k: spread([r[k] for r in rs if k in r], "{:.1f}")
    print(f"target {t} ({what}): ch-run dir {ms(base)} ms")
    for who in ("rfake", "before"):
        for kind, target in (("cold", cold_t), ("warm", warm_t)):
            k = f"{who} {kind}"
            if k not in rs[0]:
                continue
            ratios = [r[k] / r[base] for r in rs]
            print(f"target {t} ({what}): {k:<11} / ch-run dir = {spread(ratios)}; "
                  f"{ms(k)} ms; {verdict(ratios, target)}")
    if "ch-run sqfs" in rs[0]:
        print(f"target {t} ({what}): ch-run sqfs / ch-run dir = "
              f"{spread([r['ch-run sqfs'] / r[base] for r in rs])}")

p = f"{raw}/3-tar.txt"
if os.path.exists(p):
    rows = [l.split() for l in open(p)]
    ratios = [int(r[2]) / int(r[4]) for r in rows]
    print(f"target 3 (warm tar /usr): rfake / kernel squashfs = {spread(ratios)}; rfake "
          f"{spread([int(r[2]) / 1000 for r in rows], '{:.0f}')} ms, kernel "
          f"{spread([int(r[4]) / 1000 for r in rows], '{:.0f}')} ms; "
          f"{verdict(ratios, 1.1, every=True)} (every round)")

p = f"{raw}/4-slow.txt"
if os.path.exists(p):
    by = defaultdict(lambda: defaultdict(list))
    for l in open(p):
        r, line, ms = l.split()
        by[r][line].append(float(ms))
    med = {r: {k: st.median(v) for k, v in d.items()} for r, d in by.items()}
    ms = lambda k: spread([m[k] for m in med.values() if k in m], "{:.0f}")
    print(f"target 4 (slow device, first output): kernel {ms('kernel')} ms, "
          f"squashfuse_ll {ms('squashfuse')} ms")
    for who in ("rfake", "before"):
        if who not in next(iter(med.values())):
            continue
        ratios = [m[who] / m["kernel"] for m in med.values()]
        sq = [m[who] / m["squashfuse"] for m in med.values()]
        print(f"target 4 (slow device, first output): {who} / kernel = {spread(ratios)}; "
              f"/ squashfuse_ll {spread(sq)}; {ms(who)} ms; {verdict(ratios, 1.0)}")

p = f"{raw}/5-usage.txt"
if os.path.exists(p):
    by = defaultdict(lambda: ([], [], [], []))
    for l in open(p):
        m = re.match(r"\d+-(\w+)-(\w+) sampled (\d+) ([0-9.]+) exact (?:peak RSS (\d+) KiB, "
                     r"CPU ([0-9.]+) s user ([0-9.]+))?", l)
        if not m:
            continue
        d = by[(m.group(1), m.group(2))]
        d[0].append(int(m.group(3)) / 1024)
        d[1].append(float(m.group(4)))
        if m.group(5):
            d[2].append(int(m.group(5)) / 1024)
            d[3].append(float(m.group(6)) + float(m.group(7)))
    for (who, work), (rss, cpu, xrss, xcpu) in sorted(by.items()):
        exact = (f" (wait4: {spread(xrss, '{:.1f}')} MiB, {spread(xcpu, '{:.3f}')} s)"
                 if xrss else "")
        print(f"target 5 (server, cold {work}): {who} peak RSS {spread(rss, '{:.1f}')} MiB, "
              f"CPU {spread(cpu, '{:.3f}')} s{exact}; target <= 76 MiB: "
              f"{'met' if max(rss + xrss) <= 76 else 'NOT met'}")
EOF

# --- extra measurements --------------------------------------------------------------------
if wants extra; then
    export CS_USER=$user CS_RFAKE=$rfake CS_RFAKE_BEFORE=$before CS_DEMO=$demo \
        CS_DEMO_DIR=$demo_dir CS_DEBIAN=$debian CS_DEBIAN_DIR=$debian_dir CS_OUT=$raw \
        CS_ROUNDS=$rounds CS_RUNS=$runs CS_STORM=$storm CS_SCRATCH=$scratch \
        CS_ENV=$scratch/cold.env
    for extra in "$here"/cold-start.d/*.sh; do
        [[ -x $extra ]] || continue
        note "running $extra"
        if ! "$extra" >"$raw/extra-$(basename "$extra" .sh).txt" 2>&1; then
            echo "extra: $(basename "$extra") failed: see $raw/extra-$(basename "$extra" .sh).txt" |
                tee -a "$summary"
        fi
        grep -E '^(target|cache|timeline|startup)' "$raw/extra-$(basename "$extra" .sh).txt" |
            tee -a "$summary" || true
    done
fi
echo
echo "summary: $summary; raw numbers: $raw/"
