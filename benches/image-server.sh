#!/bin/bash
# Image-server benchmark: the ways of serving the same SquashFS image to a container, side by
# side in one run.
#
#   benches/image-server.sh [OPTIONS]                      # as an unprivileged user
#   sudo benches/image-server.sh --as-user USER [OPTIONS]  # adds the kernel squashfs lines
#
# This is a benchmark, not a test: it measures and reports, it does not pass or fail (the
# "met"/"NOT met" notes next to the targets do not change the exit status).
#
# The servers compared (a line of a table below is one of them):
#
#   rfake builtin cold   rfake exec, the in-process FUSE server (user configuration
#                        image_server = "builtin", warm_linger = 0: a fresh mount per launch)
#   rfake builtin warm   the same with warm_linger = 30: consecutive launches of the image reuse
#                        one mount, one server, one cache (timed after a warm-up launch; it runs
#                        a copy of the image, so that no cold line can join its lingering mount)
#   rfake squashfuse     rfake exec driving the external squashfuse_ll (image_server =
#                        "squashfuse", warm_linger = 0)
#   ch-run sqfs          Charliecloud, ch-run IMAGE.sqfs -- CMD (its built-in squashfuse)
#   ch-run dir           ch-run DIR -- CMD on the unpacked directory
#   dir                  unshare -Ur chroot DIR CMD on the unpacked directory
#   kernel squashfs      as root only: mount -t squashfs -o loop,ro IMAGE MNT (with /dev bound
#                        in), chroot MNT CMD, in a private mount namespace (unshare -m)
#
# The rfake lines run with RFAKE_CONFIG naming an empty file (no site settings) and RFAKE_USER_CONFIG naming
# a file this script writes; RFAKE_SQUASHFUSE, RFAKE_BIND and RFAKE_LOG are unset. Every
# hyperfine line is started through env(1) (the rfake lines need it for RFAKE_USER_CONFIG), so
# all of them pay the same small extra exec. Launches start in $HOME.
#
# What is measured (--only picks some):
#
#   1  start-up: /bin/true from the busybox demo image (hyperfine -N): rfake builtin cold and
#      warm, rfake squashfuse, ch-run sqfs, ch-run dir, and true on the host (the floor).
#      Targets: rfake builtin / ch-run sqfs <= 0.35, rfake builtin / ch-run dir <= 2.5 (medians;
#      shown for builtin cold and warm).
#   2  start + a Python import storm in the Debian image (hyperfine -N): python3 -c 'import
#      json, email, http.client, xml.dom.minidom, asyncio, decimal, sqlite3, unittest,
#      argparse, logging, subprocess' with rfake builtin cold and warm, rfake squashfuse, ch-run
#      sqfs and dir. Target: rfake <= 1.3 x dir (medians).
#   3  warm find: in one container, find / -xdev once (warm-up, and the entry count), then
#      --repeats timed runs of it (timed inside with date +%s%N), for rfake builtin, rfake
#      squashfuse and kernel squashfs. Target: builtin <= 1.5 x kernel (medians).
#   4  tar -cf - -C / usr | cat >/dev/null (GNU tar does not read the data when writing to
#      /dev/null itself): in each of --repeats fresh containers (fresh mounts), a cold run and
#      then a warm one, for rfake builtin (warm_linger = 0), rfake squashfuse and kernel
#      squashfs. Targets: warm builtin <= 1.3 x warm kernel, cold builtin <= 1.0 x cold
#      squashfuse. Cold means a fresh mount and server: the page cache cannot be dropped
#      without root, and the image file itself stays in the host's page cache.
#   5  peak memory of the launcher plus its FUSE server during one run of workload 4 (cold and
#      warm tar), for rfake builtin, rfake squashfuse and ch-run sqfs: the user's processes
#      named rfake*, squashfuse* or ch-run are sampled from /proc every 20 ms (those already
#      running before, such as lingering warm servers, are left out); reported: the highest
#      sampled sum of their VmRSS, the sum of their VmHWM (an upper bound: peaks need not
#      coincide), and /usr/bin/time's %M for the launcher (the largest RSS of the launcher or
#      any descendant it reaped, so the payload too). Target: builtin peak <= 16 MiB + the
#      image cache size (image_cache_size, read from `rfake config`, else 64 MiB assumed).
#   6  100 launches of /bin/true in a row, and 16 at once (background, then wait), from the
#      demo image: total wall time (hyperfine median over --loop-runs), for rfake builtin warm
#      and cold, rfake squashfuse and ch-run sqfs, with the ratios to ch-run sqfs.
#
# Before a line is timed, its command runs once: when that fails, the script prints the
# command and its output and stops (exit 1). The python3 check of 2 thus verifies that the
# modules import in the directory. 3 and 4 use the Debian image's sh, date, find and tar.
#
# Root: rfake refuses to run as root, and the numbers should be rootless ones. Run the script
# as an unprivileged user; the kernel squashfs lines then cannot be measured (3 and 4 stop
# with exit 2 unless --allow-missing-kernel). Started as root with --as-user USER, it builds
# missing images, measures the kernel squashfs lines as root, runs everything else as USER
# through runuser -u USER -- (USER must be able to read the images and this script, and to use
# /dev/fuse and user namespaces), then writes the results as root.
#
# Results go to target/bench/ (or --out DIR): image-server-STAMP.txt (the header and the summary
# table printed at the end) and image-server-STAMP.json (the summary, the raw per-repeat
# numbers and the hyperfine exports); image-server-latest.* are copies of the newest.
#
# Options:
#   --out DIR            where the results go (default target/bench)
#   --only LIST          comma-separated measurement numbers to run (default 1,2,3,4,5,6)
#   --runs N             timed hyperfine runs per line in 1 and 2 (default 30)
#   --warmup N           hyperfine warm-up runs per line in 1 and 2, at least 1 (the warm lines
#                        need one right before they are timed) (default 3)
#   --repeats N          timed repeats in 3 (finds in one container) and in 4 (fresh
#                        containers, each tarring twice) (default 5)
#   --loop-runs N        hyperfine runs of each loop in 6, after 1 warm-up (default 3)
#   --cache-size BYTES   set image_cache_size = BYTES in the builtin configurations (default:
#                        not set, rfake's default)
#   --demo IMAGE.sqfs    the busybox demo image (default target/images/demo.sqfs, built with
#                        images/build-images.sh when missing)
#   --demo-dir DIR       its unpacked directory (default target/images/demo)
#   --debian-dir DIR     the Debian root (default target/bench/debian-root; made as root with
#                        debootstrap --variant=minbase --include=python3 bookworm DIR)
#   --debian IMAGE.sqfs  the Debian image (default target/bench/debian.sqfs, built from
#                        --debian-dir with rfake build --skip-special when missing: that needs
#                        to read every file of the root, so as root)
#   --as-user USER       when started as root: run everything but the kernel squashfs lines as
#                        USER (see above); required when started as root
#   --allow-missing-kernel
#                        when not root: leave the kernel squashfs lines of 3 and 4 out (their
#                        ratios show n/a) instead of stopping
#   (--user-part DIR is internal: the unprivileged half of an --as-user run)
#
# Environment: RFAKE_BIN (default target/release/rfake), CH_RUN (default ch-run on PATH).
#
# Exit status: 0 when measured; 2 when something needed is missing (the rfake binary,
# hyperfine, ch-run, python3, /usr/bin/time, an image, root for the kernel lines) or the user
# is root without --as-user; 1 on other errors (a command line that fails, ...).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/.." && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"

die() {
    echo "image-server.sh: error: $*" >&2
    exit 1
}
missing() {
    echo "image-server.sh: $*" >&2
    exit 2
}
note() {
    echo "image-server.sh: $*" >&2
}
usage() {
    sed -n '/^# Options:/,/^set -euo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}
number() { # OPTION VALUE MIN
    [[ $2 =~ ^[0-9]+$ && $2 -ge $3 ]] || { echo "image-server.sh: $1 needs a number >= $3" >&2; usage; }
}

outdir="$project/target/bench"
only="1,2,3,4,5,6"
runs=30
warmup=3
repeats=5
loop_runs=3
cache_size=""
demo=""
demo_dir=""
debian_dir="$project/target/bench/debian-root"
debian="$project/target/bench/debian.sqfs"
as_user=""
allow_missing_kernel=0
user_part=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --out | --only | --runs | --warmup | --repeats | --loop-runs | --cache-size | --demo | \
            --demo-dir | --debian-dir | --debian | --as-user | --user-part)
            [[ $# -ge 2 ]] || usage ;;&
        --out) outdir=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --runs) number "$1" "$2" 1; runs=$2; shift 2 ;;
        --warmup) number "$1" "$2" 1; warmup=$2; shift 2 ;;
        --repeats) number "$1" "$2" 1; repeats=$2; shift 2 ;;
        --loop-runs) number "$1" "$2" 1; loop_runs=$2; shift 2 ;;
        --cache-size) number "$1" "$2" 1; cache_size=$2; shift 2 ;;
        --demo) demo=$2; shift 2 ;;
        --demo-dir) demo_dir=$2; shift 2 ;;
        --debian-dir) debian_dir=$2; shift 2 ;;
        --debian) debian=$2; shift 2 ;;
        --as-user) as_user=$2; shift 2 ;;
        --allow-missing-kernel) allow_missing_kernel=1; shift ;;
        --user-part) user_part=$2; shift 2 ;;
        -h | --help) usage ;;
        *) echo "image-server.sh: unknown argument $1" >&2; usage ;;
    esac
done

declare -A want=()
IFS=, read -r -a only_list <<<"$only"
for m in "${only_list[@]}"; do
    [[ $m =~ ^[1-6]$ ]] || { echo "image-server.sh: --only takes numbers 1 to 6, comma-separated" >&2; usage; }
    want[$m]=1
done
[[ ${#want[@]} -gt 0 ]] || usage
wants() { [[ -n ${want[$1]:-} ]]; }
needs_demo() { wants 1 || wants 6; }
needs_debian() { wants 2 || wants 3 || wants 4 || wants 5; }
needs_kernel() { wants 3 || wants 4; }

# --- who runs what -------------------------------------------------------------------------
is_root=0
[[ $(id -u) -ne 0 ]] || is_root=1
if [[ -n $user_part ]]; then
    [[ $is_root -eq 0 && -d $user_part && -w $user_part ]] || die "--user-part is internal (see --as-user)"
elif [[ $is_root -eq 1 ]]; then
    [[ -n $as_user ]] || missing "rfake refuses to run as root: run this as an unprivileged user," \
        "or as root with --as-user USER (which also measures the kernel squashfs lines)"
    id -u "$as_user" >/dev/null 2>&1 || missing "--as-user: no user $as_user"
    [[ $(id -u "$as_user") -ne 0 ]] || missing "--as-user needs an unprivileged user"
    command -v runuser >/dev/null || missing "runuser not found (util-linux)"
else
    [[ -z $as_user ]] || missing "--as-user is for runs started as root"
    if needs_kernel && [[ $allow_missing_kernel -eq 0 ]]; then
        missing "the kernel squashfs lines of 3 and 4 need root: start this as root with" \
            "--as-user USER, pass --allow-missing-kernel, or leave 3 and 4 out with --only"
    fi
fi

# --- what is needed ------------------------------------------------------------------------
rfake=${RFAKE_BIN:-$project/target/release/rfake}
[[ -x $rfake ]] || missing "rfake binary not found at $rfake: build it (cargo build --release) or set RFAKE_BIN"
rfake=$(cd "$(dirname "$rfake")" && pwd)/$(basename "$rfake")
command -v python3 >/dev/null || missing "python3 not found: apt-get install python3"
command -v hyperfine >/dev/null || missing "hyperfine not found: apt-get install hyperfine"
ch_run=${CH_RUN:-ch-run}
if wants 1 || wants 2 || wants 5 || wants 6; then
    ch_run=$(command -v "$ch_run") ||
        missing "ch-run not found: apt-get install charliecloud-runtime (or set CH_RUN)"
fi
if wants 5; then
    [[ -x /usr/bin/time ]] || missing "/usr/bin/time not found: apt-get install time"
fi
if [[ $is_root -eq 1 ]] && needs_kernel; then
    command -v unshare >/dev/null || missing "unshare not found (util-linux)"
    grep -qw squashfs /proc/filesystems || modprobe squashfs 2>/dev/null ||
        missing "the kernel has no squashfs file system (modprobe squashfs)"
fi

abspath() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }

if needs_demo; then
    if [[ -z $demo ]]; then
        demo="$project/target/images/demo.sqfs"
        [[ -n $demo_dir ]] || demo_dir="$project/target/images/demo"
        if [[ ! -f $demo || ! -d $demo_dir ]]; then
            [[ -z $user_part ]] || missing "demo image $demo missing"
            note "building the demo image into $project/target/images"
            RFAKE_BIN=$rfake "$project/images/build-images.sh" "$project/target/images" >&2 ||
                missing "could not build the demo image (images/build-images.sh above)"
        fi
    fi
    [[ -f $demo && -r $demo ]] || missing "demo image $demo not found or not readable"
    demo=$(abspath "$demo")
    [[ -n $demo_dir ]] || demo_dir=${demo%.sqfs}
    [[ -d $demo_dir ]] || missing "demo directory $demo_dir not found (--demo-dir)"
    demo_dir=$(cd "$demo_dir" && pwd)
fi
if needs_debian; then
    if [[ ! -f $debian ]]; then
        [[ -z $user_part ]] || missing "Debian image $debian missing"
        [[ -d $debian_dir ]] || missing "$debian_dir missing: as root, make it with" \
            "debootstrap --variant=minbase --include=python3 bookworm $debian_dir" \
            "(or pass --debian-dir / --debian)"
        note "building $debian from $debian_dir"
        mkdir -p "$(dirname "$debian")" || missing "cannot create $(dirname "$debian")"
        "$rfake" build --skip-special "$debian" "$debian_dir" >&2 2> >(grep -v 'left out (--skip-special)' >&2) ||
            missing "could not build $debian (rfake build needs to read all of $debian_dir: run as root)"
    fi
    [[ -f $debian && -r $debian ]] || missing "Debian image $debian not readable"
    debian=$(abspath "$debian")
    if wants 2; then
        [[ -d $debian_dir ]] || missing "Debian directory $debian_dir not found (--debian-dir)"
        debian_dir=$(cd "$debian_dir" && pwd)
    fi
fi

storm='import json, email, http.client, xml.dom.minidom, asyncio, decimal, sqlite3, unittest, argparse, logging, subprocess'
# $1: the number of timed repeats. Prints "entries N", then "find NS" per repeat.
# shellcheck disable=SC2016
find_snippet='command -v find >/dev/null || exit 127
echo "entries $(find / -xdev 2>/dev/null | wc -l)"
i=0
while [ "$i" -lt "$1" ]; do
    t0=$(date +%s%N); find / -xdev >/dev/null 2>&1; t1=$(date +%s%N)
    echo "find $((t1 - t0))"; i=$((i + 1))
done'
# Prints "cold NS" and "warm NS"; tar's exit status is checked through fd 3.
# shellcheck disable=SC2016
tar_snippet='command -v tar >/dev/null || exit 127
for k in cold warm; do
    t0=$(date +%s%N)
    st=$( { { tar -cf - -C / usr 2>/dev/null; echo $? >&3; } | cat >/dev/null; } 3>&1 )
    t1=$(date +%s%N)
    [ "$st" = 0 ] || { echo "tar -cf - -C / usr: exit status $st" >&2; exit 1; }
    echo "$k $((t1 - t0))"
done'

# inside OUTFILE LINES ARGV...: run ARGV (a launcher and a sh -c snippet) with its output into
# OUTFILE, stop with its messages when it fails or prints fewer than LINES lines.
inside() {
    local outfile=$1 lines=$2 rc=0
    shift 2
    "$@" </dev/null >"$outfile" 2>"$work/stderr" || rc=$?
    if [[ $rc -ne 0 ]]; then
        die "'$*' failed (exit $rc): $(head -c 2000 "$work/stderr"; head -c 1000 "$outfile")"
    fi
    [[ $(wc -l <"$outfile") -ge $lines ]] ||
        die "'$*' printed too little: $(head -c 1000 "$outfile"; head -c 2000 "$work/stderr")"
}

# --- the kernel squashfs lines (root) ------------------------------------------------------
kernel_part() {
    cat >"$work/kernel-run.sh" <<'EOF'
# kernel-run.sh IMAGE MNT CMD...: in a private mount namespace (unshare -m), mount IMAGE on
# MNT with the kernel's squashfs, bind /dev, chroot. The mounts go with the namespace.
set -e
image=$1 mnt=$2
shift 2
mount -t squashfs -o loop,ro "$image" "$mnt"
if [ -d "$mnt/dev" ]; then mount --bind /dev "$mnt/dev"; fi
exec chroot "$mnt" "$@"
EOF
    mkdir -p "$work/kmnt"
    local krun=(unshare -m --propagation private sh "$work/kernel-run.sh" "$debian" "$work/kmnt")
    if wants 3; then
        note "3: warm find, kernel squashfs"
        inside "$work/m3-kernel.txt" $((repeats + 1)) "${krun[@]}" sh -c "$find_snippet" find "$repeats"
    fi
    if wants 4; then
        note "4: tar, kernel squashfs ($repeats fresh mounts)"
        : >"$work/m4-kernel.txt"
        for ((r = 0; r < repeats; r++)); do
            inside "$work/m4-one.txt" 2 "${krun[@]}" sh -c "$tar_snippet"
            cat "$work/m4-one.txt" >>"$work/m4-kernel.txt"
        done
    fi
}

# --- the unprivileged lines ----------------------------------------------------------------
cmdline() { printf '%q ' "$@"; }

# check ARGV...: run ARGV once; stop with its output when it fails.
check() {
    local out rc=0
    out=$("$@" 2>&1 </dev/null) || rc=$?
    [[ $rc -eq 0 ]] || die "'$*' failed (exit $rc): ${out:0:2000}"
}

# hf_add KEY NAME ARGV...: check ARGV, then add it to the next hyperfine run.
hf_keys=()
hf_args=()
hf_add() {
    local key=$1 name=$2
    shift 2
    note "checking '$name': $*"
    check "$@"
    hf_keys+=("$key")
    hf_args+=(--command-name "$name" "$(cmdline "$@")")
}
# hf_run M HYPERFINE-OPTIONS...: time what hf_add collected; results in $work/mM.json, .keys.
hf_run() {
    local m=$1
    shift
    printf '%s\n' "${hf_keys[@]}" >"$work/m$m.keys"
    hyperfine -N "$@" --export-json "$work/m$m.json" "${hf_args[@]}" ||
        die "hyperfine failed in measurement $m (see above)"
    hf_keys=()
    hf_args=()
}

user_part() {
    cd "$HOME" 2>/dev/null || cd /
    export USER="${USER:-$(id -un)}" # ch-run refuses to start without it
    # No site settings: an empty file (rfake refuses /dev/null, a device).
    : >"$work/site.toml"
    export RFAKE_CONFIG=$work/site.toml
    unset RFAKE_USER_CONFIG RFAKE_SQUASHFUSE RFAKE_BIND RFAKE_LOG

    local cache_line=""
    [[ -z $cache_size ]] || cache_line="image_cache_size = $cache_size"
    printf 'image_server = "builtin"\nwarm_linger = 0\n%s\n' "$cache_line" >"$work/builtin-cold.toml"
    printf 'image_server = "builtin"\nwarm_linger = 30\n%s\n' "$cache_line" >"$work/builtin-warm.toml"
    printf 'image_server = "squashfuse"\nwarm_linger = 0\n' >"$work/squashfuse.toml"
    local cold=(env "RFAKE_CONFIG=$work/site.toml" "RFAKE_USER_CONFIG=$work/builtin-cold.toml" "$rfake" exec)
    local warm=(env "RFAKE_CONFIG=$work/site.toml" "RFAKE_USER_CONFIG=$work/builtin-warm.toml" "$rfake" exec)
    local sqfu=(env "RFAKE_CONFIG=$work/site.toml" "RFAKE_USER_CONFIG=$work/squashfuse.toml" "$rfake" exec)
    local chrun=(env "$ch_run")

    # The effective image cache size of the builtin server, for 5's target.
    local cfg size="" how="not shown by rfake config; 64 MiB assumed"
    if cfg=$("${cold[@]:0:4}" config 2>/dev/null); then
        size=$(sed -n 's/^image_cache_size *= *"\{0,1\}\([0-9]\{1,\}[KMGT]\{0,1\}\)"\{0,1\}\( .*\)\{0,1\}$/\1/p' \
            <<<"$cfg" | head -n1)
        [[ -z $size ]] || how="from rfake config"
    fi
    {
        echo "rfake:     $rfake ($("$rfake" --version 2>&1 </dev/null | head -n1 || true))"
        [[ $ch_run != /* ]] || echo "ch-run:    $ch_run ($("$ch_run" --version 2>&1 | head -n1 || true))"
        echo "user:      $USER (uid $(id -u)), launches from $(pwd)"
        [[ -z $demo ]] || echo "demo:      $demo ($(stat -c %s "$demo") bytes), dir $demo_dir"
        if needs_debian; then
            echo "debian:    $debian ($(stat -c %s "$debian") bytes)$(! wants 2 || echo ", dir $debian_dir")"
        fi
        echo "configs:   builtin cold: $(paste -sd' ' "$work/builtin-cold.toml");" \
            "builtin warm: $(paste -sd' ' "$work/builtin-warm.toml");" \
            "squashfuse: $(paste -sd' ' "$work/squashfuse.toml")"
        echo "hyperfine: $(hyperfine --version) -N; 1, 2: $warmup warm-up + $runs timed runs;" \
            "6: 1 warm-up + $loop_runs runs; 3, 4: $repeats repeats"
    } >>"$work/info.txt"
    printf '%s\n%s\n' "${size:-64M}" "$how" >"$work/cache_size"

    # Warm lines run a copy of the image: a cold launch must not join their lingering mount.
    if wants 1 || wants 6; then
        cp "$demo" "$work/warm-demo.sqfs"
    fi
    if wants 2; then
        cp "$debian" "$work/warm-debian.sqfs"
    fi

    if wants 1; then
        note "1: start-up of /bin/true, demo image"
        hf_add true "true (host)" env "$(type -P true || echo /bin/true)"
        hf_add builtin_cold "rfake builtin cold" "${cold[@]}" "$demo" /bin/true
        hf_add builtin_warm "rfake builtin warm" "${warm[@]}" "$work/warm-demo.sqfs" /bin/true
        hf_add squashfuse "rfake squashfuse" "${sqfu[@]}" "$demo" /bin/true
        hf_add chrun_sqfs "ch-run sqfs" "${chrun[@]}" "$demo" -- /bin/true
        hf_add chrun_dir "ch-run dir" "${chrun[@]}" "$demo_dir" -- /bin/true
        hf_run 1 --warmup "$warmup" --runs "$runs"
    fi

    if wants 2; then
        note "2: python3 import storm, Debian image"
        local py=(python3 -c "$storm")
        hf_add dir "dir (unshare chroot)" env unshare -Ur chroot "$debian_dir" "${py[@]}"
        hf_add builtin_cold "rfake builtin cold" "${cold[@]}" "$debian" "${py[@]}"
        hf_add builtin_warm "rfake builtin warm" "${warm[@]}" "$work/warm-debian.sqfs" "${py[@]}"
        hf_add squashfuse "rfake squashfuse" "${sqfu[@]}" "$debian" "${py[@]}"
        hf_add chrun_sqfs "ch-run sqfs" "${chrun[@]}" "$debian" -- "${py[@]}"
        hf_run 2 --warmup "$warmup" --runs "$runs"
    fi

    if wants 3; then
        note "3: warm find, rfake builtin"
        inside "$work/m3-builtin.txt" $((repeats + 1)) "${cold[@]}" "$debian" sh -c "$find_snippet" find "$repeats"
        note "3: warm find, rfake squashfuse"
        inside "$work/m3-squashfuse.txt" $((repeats + 1)) "${sqfu[@]}" "$debian" sh -c "$find_snippet" find "$repeats"
    fi

    if wants 4; then
        local key
        for key in builtin squashfuse; do
            local launcher=("${cold[@]}")
            [[ $key == builtin ]] || launcher=("${sqfu[@]}")
            note "4: tar, rfake $key ($repeats fresh mounts)"
            : >"$work/m4-$key.txt"
            for ((r = 0; r < repeats; r++)); do
                inside "$work/m4-one.txt" 2 "${launcher[@]}" "$debian" sh -c "$tar_snippet"
                cat "$work/m4-one.txt" >>"$work/m4-$key.txt"
            done
        done
    fi

    if wants 5; then
        write_sampler
        local key
        for key in builtin squashfuse chrun_sqfs; do
            local launcher
            case $key in
                builtin) launcher=("${cold[@]}" "$debian") ;;
                squashfuse) launcher=("${sqfu[@]}" "$debian") ;;
                chrun_sqfs) launcher=("${chrun[@]}" "$debian" --) ;;
            esac
            note "5: peak memory, $key"
            rm -f "$work/sampler.ready"
            python3 "$work/sampler.py" "$work/m5-$key.json" 0.02 "$work/sampler.ready" &
            sampler=$!
            until [[ -e $work/sampler.ready ]]; do
                kill -0 "$sampler" 2>/dev/null || die "the memory sampler did not start"
                sleep 0.01
            done
            inside "$work/m5-one.txt" 2 /usr/bin/time -f %M -o "$work/m5-$key.time" \
                "${launcher[@]}" sh -c "$tar_snippet"
            kill -TERM "$sampler"
            wait "$sampler" || die "the memory sampler failed"
            sampler=""
        done
    fi

    if wants 6; then
        note "6: 100 launches in a row, 16 at once"
        cat >"$work/serial.sh" <<'EOF'
n=$1
shift
for ((i = 0; i < n; i++)); do "$@" >/dev/null || exit; done
EOF
        cat >"$work/parallel.sh" <<'EOF'
n=$1
shift
pids=()
for ((i = 0; i < n; i++)); do "$@" >/dev/null & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit "$rc"
EOF
        local key name
        local -A launch=(
            [builtin_warm]="rfake builtin warm"
            [builtin_cold]="rfake builtin cold"
            [squashfuse]="rfake squashfuse"
            [chrun_sqfs]="ch-run sqfs"
        )
        for key in builtin_warm builtin_cold squashfuse chrun_sqfs; do
            name=${launch[$key]}
            local argv
            case $key in
                builtin_warm) argv=("${warm[@]}" "$work/warm-demo.sqfs" /bin/true) ;;
                builtin_cold) argv=("${cold[@]}" "$demo" /bin/true) ;;
                squashfuse) argv=("${sqfu[@]}" "$demo" /bin/true) ;;
                chrun_sqfs) argv=("${chrun[@]}" "$demo" -- /bin/true) ;;
            esac
            note "checking '$name': ${argv[*]}"
            check "${argv[@]}"
            hf_keys+=("serial:$key" "parallel:$key")
            hf_args+=(--command-name "$name: 100 in a row" "$(cmdline bash "$work/serial.sh" 100 "${argv[@]}")")
            hf_args+=(--command-name "$name: 16 at once" "$(cmdline bash "$work/parallel.sh" 16 "${argv[@]}")")
        done
        hf_run 6 --warmup 1 --runs "$loop_runs"
    fi
}

write_sampler() {
    cat >"$work/sampler.py" <<'EOF'
# sampler.py OUT.json INTERVAL READY: until SIGTERM, every INTERVAL seconds, sum the VmRSS of
# this user's processes named rfake*, squashfuse* or ch-run, leaving out those that ran
# before (touches READY after that first scan); writes the peak and the VmHWM per process.
import json, os, re, signal, sys, time

out, interval, ready = sys.argv[1], float(sys.argv[2]), sys.argv[3]
uid = os.getuid()
names = re.compile(r"^(rfake.*|squashfuse.*|ch-run)$")

def scan():
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                fields = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) != uid or not names.match(fields["Name"].strip()):
            continue
        kib = lambda k: int(fields.get(k, "0 kB").split()[0])
        procs[int(d)] = (fields["Name"].strip(), kib("VmRSS"), kib("VmHWM"))
    return procs

before = set(scan())
stop = False
def on_term(signum, frame):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
open(ready, "w").close()

peak, at_peak, hwm, samples = 0, {}, {}, 0
while True:
    procs = {p: v for p, v in scan().items() if p not in before}
    samples += 1
    total = sum(v[1] for v in procs.values())
    if total > peak:
        peak = total
        at_peak = {}
        for name, rss, _ in procs.values():
            at_peak[name] = at_peak.get(name, 0) + rss
    for p, (name, _, h) in procs.items():
        hwm[p] = (name, max(h, hwm.get(p, (name, 0))[1]))
    if stop:
        break
    time.sleep(interval)
with open(out, "w") as f:
    json.dump({"peak_rss_kib": peak, "at_peak_kib": at_peak, "samples": samples,
               "sum_hwm_kib": sum(h for _, h in hwm.values()),
               "hwm_kib": [{"pid": p, "name": n, "hwm": h} for p, (n, h) in sorted(hwm.items())]},
              f)
EOF
}

# --- the summary ---------------------------------------------------------------------------
summary() { # BASE
    python3 - "$work" "$1" <<'EOF'
import json, os, statistics, sys

work, base = sys.argv[1], sys.argv[2]
names = {"true": "true (host)", "builtin_cold": "rfake builtin cold",
         "builtin_warm": "rfake builtin warm", "builtin": "rfake builtin",
         "squashfuse": "rfake squashfuse", "chrun_sqfs": "ch-run sqfs", "chrun_dir": "ch-run dir",
         "dir": "dir (unshare chroot)", "kernel": "kernel squashfs"}
data = {}
lines = []
ratios = []
def out(s=""):
    lines.append(s)

def hyperfine(m):
    path = f"{work}/m{m}.json"
    if not os.path.exists(path):
        return None
    with open(path) as f:
        raw = json.load(f)
    with open(f"{work}/m{m}.keys") as f:
        keys = f.read().split()
    results = raw["results"]
    if len(keys) != len(results):
        sys.exit(f"{path}: {len(results)} results for {len(keys)} commands")
    data[f"hyperfine_{m}"] = raw
    return dict(zip(keys, results))

def ratio(label, a, b, target=None, why=None):
    entry = {"label": label, "target": target}
    if a is None or b is None:
        entry["value"] = None
        text = f"n/a ({why})" if why else "n/a"
    else:
        entry["value"] = x = a / b
        text = f"{x:6.2f}"
        if target is not None:
            entry["met"] = x <= target
            text += f"   (target <= {target}: {'met' if x <= target else 'NOT met'})"
    ratios.append(entry)
    out(f"  {label:<46} {text}")

def table(res, title):
    out(f"  {title:<24} {'median ms':>10} {'mean ms':>10} {'stddev ms':>10} {'min ms':>10}")
    for k, r in res.items():
        cols = (r["median"], r["mean"], r["stddev"] or 0.0, r["min"])
        out(f"  {r['command']:<24}" + "".join(f" {c * 1000:10.2f}" for c in cols))

def med(res, k):
    return res[k]["median"] if res and k in res else None

def numbers(path, tag):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return [int(l.split()[1]) / 1e9 for l in f if l.split()[:1] == [tag]]

nokernel = "no kernel squashfs: not root"

res = hyperfine(1)
if res:
    out("1. start-up of /bin/true, demo image (hyperfine)")
    table(res, "line")
    for k in ("builtin_cold", "builtin_warm"):
        ratio(f"{names[k]} / ch-run sqfs", med(res, k), med(res, "chrun_sqfs"), 0.35)
    for k in ("builtin_cold", "builtin_warm"):
        ratio(f"{names[k]} / ch-run dir", med(res, k), med(res, "chrun_dir"), 2.5)
    ratio("rfake squashfuse / ch-run sqfs", med(res, "squashfuse"), med(res, "chrun_sqfs"))
    out()

res = hyperfine(2)
if res:
    out("2. start + python3 import storm, Debian image (hyperfine)")
    table(res, "line")
    for k in ("builtin_cold", "builtin_warm", "squashfuse"):
        ratio(f"{names[k]} / dir", med(res, k), med(res, "dir"), 1.3)
    ratio("ch-run sqfs / dir", med(res, "chrun_sqfs"), med(res, "dir"))
    out()

m3 = {k: numbers(f"{work}/m3-{k}.txt", "find") for k in ("builtin", "squashfuse", "kernel")}
if any(m3.values()):
    data["find_s"] = m3
    out("3. warm find / -xdev in one container, Debian image (timed inside)")
    out(f"  {'line':<24} {'median ms':>10} {'min ms':>10} {'max ms':>10} {'runs':>5} {'entries':>8}")
    m3med = {}
    for k, v in m3.items():
        if not v:
            out(f"  {names[k]:<24} {'n/a':>10}" + (f"   ({nokernel})" if k == "kernel" else ""))
            continue
        m3med[k] = statistics.median(v)
        with open(f"{work}/m3-{k}.txt") as f:
            entries = next((l.split()[1] for l in f if l.startswith("entries ")), "?")
        out(f"  {names[k]:<24} {m3med[k] * 1000:10.2f} {min(v) * 1000:10.2f} "
            f"{max(v) * 1000:10.2f} {len(v):5d} {entries:>8}")
    ratio("rfake builtin / kernel", m3med.get("builtin"), m3med.get("kernel"), 1.5, nokernel)
    ratio("rfake squashfuse / kernel", m3med.get("squashfuse"), m3med.get("kernel"), None, nokernel)
    ratio("rfake builtin / rfake squashfuse", m3med.get("builtin"), m3med.get("squashfuse"))
    out()

m4 = {k: {t: numbers(f"{work}/m4-{k}.txt", t) for t in ("cold", "warm")}
      for k in ("builtin", "squashfuse", "kernel")}
if any(v["cold"] for v in m4.values()):
    data["tar_s"] = m4
    out("4. tar -cf - -C / usr | cat, Debian image (timed inside; cold: fresh mount)")
    out(f"  {'line':<24} {'cold median s':>14} {'cold min s':>11} {'warm median s':>14} "
        f"{'warm min s':>11} {'runs':>5}")
    m4med = {}
    for k, v in m4.items():
        if not v["cold"]:
            out(f"  {names[k]:<24} {'n/a':>14}" + (f"   ({nokernel})" if k == "kernel" else ""))
            continue
        m4med[k] = {t: statistics.median(v[t]) for t in ("cold", "warm")}
        out(f"  {names[k]:<24} {m4med[k]['cold']:14.3f} {min(v['cold']):11.3f} "
            f"{m4med[k]['warm']:14.3f} {min(v['warm']):11.3f} {len(v['cold']):5d}")
    g = lambda k, t: m4med.get(k, {}).get(t)
    ratio("warm: rfake builtin / kernel", g("builtin", "warm"), g("kernel", "warm"), 1.3, nokernel)
    ratio("cold: rfake builtin / rfake squashfuse", g("builtin", "cold"), g("squashfuse", "cold"), 1.0)
    ratio("warm: rfake squashfuse / kernel", g("squashfuse", "warm"), g("kernel", "warm"), None, nokernel)
    ratio("cold: rfake builtin / kernel", g("builtin", "cold"), g("kernel", "cold"), None, nokernel)
    out()

m5 = {}
for k in ("builtin", "squashfuse", "chrun_sqfs"):
    if os.path.exists(f"{work}/m5-{k}.json"):
        with open(f"{work}/m5-{k}.json") as f:
            m5[k] = json.load(f)
        with open(f"{work}/m5-{k}.time") as f:
            m5[k]["time_max_rss_kib"] = int(f.read().split()[-1])
if m5:
    with open(f"{work}/cache_size") as f:
        size, how = f.read().splitlines()[:2]
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    cache = int(size[:-1]) * mult[size[-1]] if size[-1] in mult else int(size)
    data["memory"] = {"cache_size_bytes": cache, "cache_size_source": how, "servers": m5}
    out("5. peak memory, launcher + FUSE server, during workload 4 (MiB)")
    out(f"  {'line':<24} {'peak RSS sum':>13} {'VmHWM sum':>10} {'time %M':>8}  at the peak")
    for k, v in m5.items():
        parts = ", ".join(f"{n} {kib / 1024:.1f}" for n, kib in sorted(v["at_peak_kib"].items()))
        out(f"  {names[k]:<24} {v['peak_rss_kib'] / 1024:13.1f} {v['sum_hwm_kib'] / 1024:10.1f} "
            f"{v['time_max_rss_kib'] / 1024:8.1f}  {parts}")
    out(f"  image cache size: {cache / (1 << 20):.1f} MiB ({how})")
    limit = 16 * (1 << 20) + cache
    ratio(f"rfake builtin peak / (16 MiB + cache = {limit / (1 << 20):.0f} MiB)",
          m5["builtin"]["peak_rss_kib"] * 1024 if "builtin" in m5 else None, limit, 1.0)
    out()

res = hyperfine(6)
if res:
    out("6. many launches of /bin/true, demo image (hyperfine median of the totals)")
    out(f"  {'line':<24} {'100 in a row s':>15} {'per launch ms':>14} {'16 at once s':>13}")
    for k in ("builtin_warm", "builtin_cold", "squashfuse", "chrun_sqfs"):
        s, p = med(res, f"serial:{k}"), med(res, f"parallel:{k}")
        if s is not None:
            out(f"  {names[k]:<24} {s:15.3f} {s * 10:14.2f} {p:13.3f}")
    for k in ("builtin_warm", "builtin_cold", "squashfuse"):
        ratio(f"100 in a row: {names[k]} / ch-run sqfs", med(res, f"serial:{k}"),
              med(res, "serial:chrun_sqfs"))
    for k in ("builtin_warm", "builtin_cold", "squashfuse"):
        ratio(f"16 at once: {names[k]} / ch-run sqfs", med(res, f"parallel:{k}"),
              med(res, "parallel:chrun_sqfs"))
    out()

text = "\n".join(lines)
print(text)
with open(f"{work}/info.txt") as f:
    info = f.read().splitlines()
with open(f"{base}.json", "w") as f:
    json.dump({"info": info, "summary": text.splitlines(), "ratios": ratios, "data": data},
              f, indent=1)
EOF
}

finish() { # print the header, the summary, write the results
    local base="$outdir/image-server-$stamp"
    {
        echo "# rfake image-server benchmark, $stamp"
        echo "host:      $(uname -srm), $(nproc) CPUs"
        cat "$work/info.txt"
        if needs_kernel; then
            if [[ $is_root -eq 1 ]]; then
                echo "kernel:    squashfs, loop, ro, measured as root"
            else
                echo "kernel:    not measured (not root: --allow-missing-kernel)"
            fi
        fi
        echo
    } >"$work/header.txt"
    cp "$work/header.txt" "$work/info.txt"
    summary "$base" >"$work/summary.txt" || die "the summary failed"
    cat "$work/header.txt" "$work/summary.txt" >"$base.txt"
    echo
    cat "$base.txt"
    for ext in json txt; do
        cp "$base.$ext" "$outdir/image-server-latest.$ext"
    done
    echo "results: $base.{json,txt} (copies: $outdir/image-server-latest.*)"
}

# --- run -----------------------------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
sampler="" # the memory sampler's pid while it runs
own_work=0
cleanup() {
    if [[ -n $sampler ]]; then
        kill -KILL "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
    fi
    [[ $own_work -eq 0 ]] || rm -rf "$work"
    # ch-run leaves its (empty) mount point directory behind in /var/tmp.
    local chdir
    chdir="/var/tmp/$(id -un).ch"
    if [[ -O $chdir ]]; then
        rmdir "$chdir/mnt" "$chdir" 2>/dev/null || true
    fi
}
trap cleanup EXIT
if [[ -n $user_part ]]; then
    work=$user_part
    user_part
    exit 0
fi

mkdir -p "$outdir" 2>/dev/null || missing "cannot create $outdir (pass --out DIR)"
[[ -w $outdir ]] || missing "cannot write to $outdir (pass --out DIR)"
outdir=$(cd "$outdir" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/image-server.XXXXXX")
own_work=1
: >"$work/info.txt"
if [[ $is_root -eq 1 ]]; then
    if needs_kernel; then
        kernel_part
    fi
    chown -R "$as_user:" "$work"
    # runuser sets HOME, USER and LOGNAME for the user; the rest of the environment stays.
    rc=0
    runuser -u "$as_user" -- env RFAKE_BIN="$rfake" CH_RUN="$ch_run" "$self" --user-part "$work" \
        --only "$only" --runs "$runs" --warmup "$warmup" --repeats "$repeats" \
        --loop-runs "$loop_runs" ${cache_size:+--cache-size "$cache_size"} \
        ${demo:+--demo "$demo"} ${demo_dir:+--demo-dir "$demo_dir"} \
        --debian "$debian" --debian-dir "$debian_dir" || rc=$?
    [[ $rc -eq 0 ]] || exit "$rc"
else
    user_part
fi
finish
