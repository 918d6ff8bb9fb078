#!/bin/bash
# Where a launch's time goes (issue 18): the phases of one `true` from the demo image, cold,
# warm, and ch-run on the unpacked directory, from kernel tracepoints (perf record: scheduler,
# a few system calls, FUSE requests), over CS_RUNS launches of each; the median and range of
# each phase. Run by benches/cold-start.sh (see README here) or alone, as root:
#
#   sudo CS_USER=rfake-test benches/cold-start.d/timeline.sh
#
# Phases (ms, from the tracepoints' timestamps; perf's own cost is in them, a few percent):
#   start     exec of rfake (or ch-run) to its first namespace call (unshare or setns): the
#             dynamic loader, rfake's runtime, parsing, the configuration, the image's checks
#   serve     (cold) that call to the reply to the server's FUSE INIT: the mount, the
#             server's fork and its start
#   set-up    then to the payload's exec: the container's mounts, files and environment, with
#             the FUSE requests rfake itself makes (counted)
#   payload   the payload's exec to its exit, with its FUSE requests (counted)
#   teardown  the payload's exit to rfake's (or ch-run's) exit: stopping the server, the
#             namespaces' end
# Output: "timeline" lines (copied into cold-start.sh's summary) and the raw phases in
# $CS_OUT/timeline.tsv.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/../.." && pwd)
: "${CS_USER:?CS_USER: the user to run launches as}"
rfake=${CS_RFAKE:-$project/target/release/rfake}
demo=${CS_DEMO:-/var/tmp/rfake-static/images/demo.sqfs}
demo_dir=${CS_DEMO_DIR:-${demo%.sqfs}}
runs=${CS_RUNS:-10}
out=${CS_OUT:-$(mktemp -d /tmp/timeline.XXXXXX)}
ch_run=${CH_RUN:-$(command -v ch-run || true)}
command -v perf >/dev/null || {
    echo "timeline.sh: perf is missing (apt install linux-perf)" >&2
    exit 2
}

scratch=$(mktemp -d /tmp/rfake-timeline.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
printf 'image_server = "builtin"\nwarm_linger = 0\n' >"$scratch/cold.toml"
printf 'image_server = "builtin"\nwarm_linger = 30\n' >"$scratch/warm.toml"
: >"$scratch/site.toml"
# The warm line uses a copy: the cold lines must not join its lingering mount.
cp "$demo" "$scratch/warm.sqfs"
chmod -R a+rX "$scratch"

events=sched:sched_process_exec,sched:sched_process_exit,sched:sched_process_fork
events+=,syscalls:sys_enter_unshare,syscalls:sys_enter_setns
events+=,fuse:fuse_request_send,fuse:fuse_request_end

# trace LABEL CMD...: one launch under perf (CMD a program, not a function), its events
# appended to $scratch/LABEL.txt
trace() {
    local label=$1
    shift
    perf record -q -o "$scratch/perf.data" -e "$events" -- "$@" >/dev/null 2>&1 || true
    {
        echo "### launch"
        perf script -i "$scratch/perf.data" -F comm,pid,tid,time,event,trace 2>/dev/null
    } >>"$scratch/$label.txt"
}

as_user() { runuser -u "$CS_USER" -- "$@"; }
cold_env=(RFAKE_CONFIG="$scratch/site.toml" RFAKE_USER_CONFIG="$scratch/cold.toml")
warm_env=(RFAKE_CONFIG="$scratch/site.toml" RFAKE_USER_CONFIG="$scratch/warm.toml")

as_user env "${warm_env[@]}" "$rfake" exec "$scratch/warm.sqfs" true # make the warm mount
for ((i = 0; i < runs; i++)); do
    trace cold runuser -u "$CS_USER" -- env "${cold_env[@]}" "$rfake" exec "$demo" /bin/true
    trace warm runuser -u "$CS_USER" -- env "${warm_env[@]}" "$rfake" exec "$scratch/warm.sqfs" /bin/true
    if [[ -n $ch_run && -d $demo_dir ]]; then
        trace ch-run runuser -u "$CS_USER" -- "$ch_run" "$demo_dir" -- /bin/true
    fi
done

python3 - "$scratch" "$out/timeline.tsv" "$(basename "$rfake")" <<'EOF'
import re, statistics, sys
scratch, tsv, rfake_name = sys.argv[1], sys.argv[2], sys.argv[3]
line_re = re.compile(r'^\s*(\S.*?)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$')

def launches(label):
    try:
        text = open(f'{scratch}/{label}.txt').read()
    except FileNotFoundError:
        return []
    return [chunk for chunk in text.split('### launch\n') if chunk.strip()]

def phases(chunk, launcher):
    ev = []
    for line in chunk.splitlines():
        m = line_re.match(line)
        if m:
            comm, pid, tid, t, name, rest = m.groups()
            ev.append((float(t) * 1000, comm, int(pid), int(tid), name, rest))
    main = None
    p = {}
    init_req = None
    fuse_by = {'set-up': 0, 'payload': 0}
    payload = None
    for t, comm, pid, tid, name, rest in ev:
        if name == 'sched:sched_process_exec' and main is None and rest.split()[0].endswith('/' + launcher):
            main, p['exec'] = pid, t
        elif main is None:
            continue
        elif name in ('syscalls:sys_enter_unshare', 'syscalls:sys_enter_setns') and pid == main and 'ns' not in p:
            p['ns'] = t
        elif name == 'fuse:fuse_request_send':
            if 'FUSE_INIT' in rest:
                init_req = re.search(r'req (\d+)', rest).group(1)
            elif pid == main and 'payload' not in p:
                fuse_by['set-up'] += 1
            elif payload is not None and pid == payload:
                fuse_by['payload'] += 1
        elif name == 'fuse:fuse_request_end' and init_req and re.search(rf'req {init_req} ', rest):
            p['init'] = t
        elif name == 'sched:sched_process_exec' and payload is None and (pid != main or 'ns' in p):
            # rfake forks its payload; ch-run execs it in its own process
            payload, p['payload'] = pid, t
        if name == 'sched:sched_process_exit' and pid == payload and tid == pid and 'payload_end' not in p:
            p['payload_end'] = t
        if name == 'sched:sched_process_exit' and pid == main and tid == main:
            p['end'] = t
    need = ['exec', 'payload', 'payload_end', 'end']
    if any(k not in p for k in need):
        return None
    begin_setup = p.get('init', p.get('ns', p['exec']))
    out = {
        'start': p.get('ns', p['payload']) - p['exec'],
        'serve': p['init'] - p['ns'] if 'init' in p and 'ns' in p else 0.0,
        'set-up': p['payload'] - begin_setup,
        'payload': p['payload_end'] - p['payload'],
        'teardown': p['end'] - p['payload_end'],
        'total': p['end'] - p['exec'],
        'requests set-up': fuse_by['set-up'],
        'requests payload': fuse_by['payload'],
    }
    return out

keys = ['start', 'serve', 'set-up', 'payload', 'teardown', 'total']
with open(tsv, 'w') as f:
    f.write('label\t' + '\t'.join(keys + ['requests set-up', 'requests payload']) + '\n')
    for label, launcher in (('cold', rfake_name), ('warm', rfake_name), ('ch-run', 'ch-run')):
        rows = [r for r in (phases(c, launcher) for c in launches(label)) if r]
        for r in rows:
            f.write(label + '\t' + '\t'.join(f'{r[k]:.3f}' if isinstance(r[k], float) else str(r[k]) for k in keys + ['requests set-up', 'requests payload']) + '\n')
        if not rows:
            continue
        parts = []
        for k in keys:
            v = [r[k] for r in rows]
            if label != 'cold' and k == 'serve':
                continue
            parts.append(f'{k} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})')
        req = lambda k: statistics.median(r[k] for r in rows)
        fuse = f'; FUSE requests: set-up {req("requests set-up"):.0f}, payload {req("requests payload"):.0f}' if label != 'ch-run' else ''
        print(f'timeline {label:6} `true`, ms, median (range) of {len(rows)}: ' + ', '.join(parts) + fuse)
EOF
