#!/usr/bin/env bash
# A throw-away Slurm cluster on this one machine, for rfake's tests and demos.
#
#   slurm/cluster.sh start [--nodes N]   start munged, slurmctld and N slurmd (default 2)
#   slurm/cluster.sh stop                cancel every job, stop what start started
#   slurm/cluster.sh status              what runs, and sinfo
#
# Run as root on Debian 12 (no systemd needed: the script starts the daemons
# itself). It installs nothing; it checks what it needs and names the Debian
# packages that are missing. Every command is idempotent.
#
# All state lives under one directory, $RFAKE_SLURM_DIR (default
# /var/tmp/rfake-slurm):
#
#   slurm.conf              the cluster's configuration (world-readable)
#   ctld/                   slurmctld's StateSaveLocation
#   log/                    slurmctld.log, slurmd-nodeX.log
#   run/                    pid files; the UTS namespace of each slurmd
#   node/nodeX/             one directory per emulated node:
#     slurm.conf -> ../../slurm.conf   slurmd's config path (see below)
#     mpi.conf                         this node's PMIx client directory
#     spool/                           SlurmdSpoolDir
#   munge/                  munged's pid and log files (when this script started munged)
#   plugstack.conf          SPANK plugins: rfake's, when spank/ was installed (below)
#   spank/                  rfake's SPANK plugin (make -C spank install LIBDIR=...),
#                           and spank/site/, a directory its site option binds
#
# One exception: each node's PMIx client directory (PMIxCliTmpDirBase) is
# $pmix_base/nodeX (RFAKE_SLURM_PMIX_DIR, default /tmp/slurm-pmix-rfake). A real cluster's is
# under TmpFS (/tmp), which containers see: MPI ranks in containers must
# find it, and would not under the state directory.
#
# Emulated nodes: Debian's Slurm is built with multiple-slurmd support, so
# each node is a slurmd started with -N nodeX, listening on its own port at
# 127.0.0.1. Each slurmd runs in its own UTS namespace whose hostname is
# nodeX: `hostname` in a job prints the node name, and Open MPI's
# shared-memory segments, named after the host, do not collide between
# nodes. Slurm reads mpi.conf from the directory of the slurm.conf path it
# was given (SLURM_CONF), so each slurmd gets its own directory holding a
# link to the shared slurm.conf and its own mpi.conf: the PMIx client
# directories of two nodes must differ too.
#
# Users submit with:  export SLURM_CONF=$RFAKE_SLURM_DIR/slurm.conf
set -euo pipefail

state=${RFAKE_SLURM_DIR:-/var/tmp/rfake-slurm}
conf=$state/slurm.conf
# slurmctld listens on $port, nodeI's slurmd on $port+I.
port=${RFAKE_SLURM_PORT:-6817}
# CPUs each emulated node declares. More than the machine has on purpose:
# `srun -n16` must fit on two nodes of a 2-core machine. slurmd accepts the
# declared value instead of the detected one thanks to
# SlurmdParameters=config_overrides.
cpus=${RFAKE_SLURM_CPUS:-16}
# Seconds between SIGTERM and SIGKILL when a job is cancelled or runs out of
# time. Slurm's default is 30; a short value keeps scancel tests fast while
# leaving a payload time to clean up.
killwait=5
# How long start waits for every node to be idle, and stop for the jobs and
# daemons to end.
start_timeout=${RFAKE_SLURM_START_TIMEOUT:-20}
stop_timeout=20

pmix_base=${RFAKE_SLURM_PMIX_DIR:-/tmp/slurm-pmix-rfake}

# rfake's SPANK plugin (spank/): loaded when rfake_spank.so is in this
# directory when the cluster starts (`make -C spank install LIBDIR=$state/spank`,
# as tests/run.sh does). Its site options: images only under /var/tmp and
# /home, and $spank_dir/site bound read-only at /rfake-site in every container
# (tests/spank.rs checks both). RFAKE_SLURM_SPANK_OPTS replaces them.
spank_dir=$state/spank
spank_opts=${RFAKE_SLURM_SPANK_OPTS:-images=/var/tmp:/home mounts=$spank_dir/site:/rfake-site:ro}

munge_socket=/run/munge/munge.socket.2
munge_key=/etc/munge/munge.key

me=cluster.sh
die() { echo "$me: error: $*" >&2; exit 1; }
say() { echo "$me: $*"; }

usage() {
  cat >&2 <<EOF
usage: slurm/cluster.sh start [--nodes N] | stop | status
  state directory: \$RFAKE_SLURM_DIR (now $state)
EOF
  exit 2
}

# --- prerequisites ---------------------------------------------------------

# Slurm's mpi/pmix plugin (mpi_pmix.so -> mpi_pmix_v4.so) ships in
# slurm-wlm-basic-plugins, which slurmctld and slurmd pull in; it loads
# libpmix from libpmix2 at run time, a package nothing of Slurm depends on
# (openmpi-bin does). libpmix-dev is not needed.
pmix_lib=/usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so.2
pmix_plugin=/usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so

check_prereqs() {
  local missing=() cmd pkg
  for pair in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client \
              sbatch:slurm-client munged:munge unmunge:munge \
              unshare:util-linux runuser:util-linux; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    die "missing Debian packages: ${missing[*]}
  install them with:  apt-get install -y slurmctld slurmd slurm-client munge
  and, for MPI jobs (srun --mpi=pmix, mpirun):  apt-get install -y openmpi-bin libpmix2
  (Slurm's mpi/pmix plugin is in slurm-wlm-basic-plugins, which slurmd pulls in)"
  fi
  local mpi_missing=()
  command -v mpirun >/dev/null 2>&1 || mpi_missing+=(openmpi-bin)
  [ -e "$pmix_lib" ] || mpi_missing+=(libpmix2)
  [ -e "$pmix_plugin" ] || mpi_missing+=(slurm-wlm-basic-plugins)
  if [ "${#mpi_missing[@]}" -gt 0 ]; then
    echo "$me: warning: MPI jobs will not work: missing Debian packages ${mpi_missing[*]}" \
         "(apt-get install -y ${mpi_missing[*]})" >&2
  fi
}

# --- processes ---------------------------------------------------------------

# The pid in a pid file, if that process is alive and runs the program the
# file is named after (slurmctld.pid, slurmd-node1.pid, munged.pid): a stale
# pid file whose pid was reused must not make stop kill a stranger.
live_pid() {
  local f=$1 pid prog exe
  [ -s "$f" ] || return 1
  read -r pid <"$f" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  prog=$(basename "$f" .pid)
  prog=${prog%%-*}
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  # Debian's /usr/sbin/slurmd is a link to slurmd-wlm.
  [ "$exe" = "$(readlink -f "$(command -v "$prog")")" ] || return 1
  echo "$pid"
}

# SIGTERM the processes of the pid files given, wait (bounded) until they
# are gone, SIGKILL those that are not. Slurm's daemons take about 2 s to
# exit, so they are stopped together.
stop_pidfiles() {
  local f pid i pids=() alive
  for f in "$@"; do
    if pid=$(live_pid "$f"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for ((i = 0; i < stop_timeout * 10; i++)); do
    alive=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      say "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)) ignored SIGTERM for ${stop_timeout}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$@"
}

node_names() {
  local f
  for f in "$state"/node/*/; do
    [ -d "$f" ] && basename "$f"
  done
}

# --- configuration -----------------------------------------------------------

write_conf() {
  local nodes=$1 i
  {
    cat <<EOF
# Written by rfake's slurm/cluster.sh: a $nodes-node cluster emulated on one
# machine. Regenerated by every start; edit the script, not this file.
ClusterName=rfake
SlurmctldHost=localhost
SlurmctldPort=$port
# Simplest for a test cluster: the daemons run as root.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# No cgroups (no systemd here): processes are tracked by parent pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Nodes declare more CPUs than the machine has; slurmd must not correct them.
SlurmdParameters=config_overrides
# A node that was down comes back as soon as its slurmd registers.
ReturnToService=2
# Start batch jobs at once instead of after the scheduler's usual delays.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
# Seconds between SIGTERM and SIGKILL on scancel or time limit (default 30).
KillWait=$killwait
# Keep finished jobs visible in scontrol/squeue for 5 minutes (exit codes).
MinJobAge=300
InactiveLimit=0
StateSaveLocation=$state/ctld
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdSpoolDir=$state/node/%n/spool
SlurmdPidFile=$state/run/slurmd-%n.pid
SlurmdLogFile=$state/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# SPANK plugins (rfake's, when installed): srun, sbatch, salloc and
# slurmstepd read it at each start, slurmd when it starts.
PlugStackConfig=$state/plugstack.conf
EOF
    for ((i = 1; i <= nodes; i++)); do
      echo "NodeName=node$i NodeAddr=127.0.0.1 NodeHostname=node$i Port=$((port + i)) CPUs=$cpus State=UNKNOWN"
    done
    echo "PartitionName=debug Default=YES Nodes=ALL MaxTime=INFINITE State=UP"
  } >"$conf.new"
  chmod 0644 "$conf.new"
}

write_plugstack() {
  {
    echo "# Written by rfake's slurm/cluster.sh at each start."
    if [ -f "$spank_dir/rfake_spank.so" ]; then
      # required: a plugin that fails to load fails the step, as a site
      # that relies on it wants.
      echo "required $spank_dir/rfake_spank.so helper=$spank_dir/rfake-spank-exec $spank_opts"
    else
      echo "# no rfake SPANK plugin: $spank_dir/rfake_spank.so is missing (make -C spank install LIBDIR=$spank_dir)"
    fi
  } >"$state/plugstack.conf.new"
  chmod 0644 "$state/plugstack.conf.new"
  mv "$state/plugstack.conf.new" "$state/plugstack.conf"
  if [ -d "$spank_dir" ]; then
    install -d -m 0755 "$spank_dir/site"
    echo "a file of the site's, bound by the rfake SPANK plugin's mounts= option" >"$spank_dir/site/README"
    chmod 0644 "$spank_dir/site/README"
  fi
}

prepare_dirs() {
  local nodes=$1 i n
  install -d -m 0755 "$state" "$state/node" "$state/log" "$state/run"
  install -d -m 0700 "$state/ctld"
  # Nodes of an earlier, larger cluster.
  for n in $(node_names); do
    i=${n#node}
    if ! [[ $i =~ ^[0-9]+$ ]] || [ "$i" -gt "$nodes" ]; then
      rm -rf "${state:?}/node/$n"
    fi
  done
  for ((i = 1; i <= nodes; i++)); do
    n=node$i
    install -d -m 0755 "$state/node/$n" "$state/node/$n/spool"
    # slurmstepd (root) makes each step's PMIx client directory below it.
    install -d -m 0755 "$pmix_base" "$pmix_base/$n"
    ln -sfn ../../slurm.conf "$state/node/$n/slurm.conf"
    cat >"$state/node/$n/mpi.conf" <<EOF
# $n's own PMIx client directory: two emulated nodes on one machine must not share it.
PMIxCliTmpDirBase=$pmix_base/$n
EOF
    chmod 0644 "$state/node/$n/mpi.conf"
  done
}

# --- munge ---------------------------------------------------------------------

munge_works() {
  munge -n -S "$munge_socket" 2>/dev/null | unmunge -S "$munge_socket" >/dev/null 2>&1
}

start_munge() {
  if munge_works; then
    return 0
  fi
  if [ ! -s "$munge_key" ]; then
    say "creating the munge key $munge_key"
    install -d -o munge -g munge -m 0700 /etc/munge
    if command -v mungekey >/dev/null 2>&1; then
      runuser -u munge -- mungekey --create --keyfile="$munge_key"
    else
      dd if=/dev/urandom of="$munge_key" bs=1 count=1024 status=none
    fi
  fi
  chown munge:munge "$munge_key"
  chmod 0400 "$munge_key"
  # /run is a tmpfs: without systemd nobody recreates these after a boot.
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 "$state/munge"
  rm -f "$state/munge/munged.pid"
  runuser -u munge -- munged --socket="$munge_socket" \
    --pid-file="$state/munge/munged.pid" --log-file="$state/munge/munged.log" ||
    die "munged did not start; its log:
$(tail -n 20 "$state/munge/munged.log" 2>/dev/null)"
  local i
  for ((i = 0; i < 50; i++)); do
    munge_works && return 0
    sleep 0.1
  done
  die "munged does not answer on $munge_socket; its log:
$(tail -n 20 "$state/munge/munged.log" 2>/dev/null)"
}

# --- start / stop / status ---------------------------------------------------

slurmctld_pid() { live_pid "$state/run/slurmctld.pid"; }
slurmd_pid() { live_pid "$state/run/slurmd-$1.pid"; }

# Every node of sinfo idle (or running jobs): prints nothing, succeeds.
all_nodes_up() {
  local want=$1 out
  out=$(SLURM_CONF=$conf sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
  [ "$(grep -c . <<<"$out")" = "$want" ] || return 1
  ! grep -Evq ' (idle|mix|alloc)$' <<<"$out"
}

# Whether each slurmd of "${started[@]}" has logged, since the line count in
# "${log_lines[@]}", that it runs (it listens by then).
slurmds_listen() {
  local k
  for k in "${!started[@]}"; do
    tail -n "+$((log_lines[k] + 1))" "$state/log/slurmd-${started[k]}.log" 2>/dev/null |
      grep -q 'slurmd started on' || return 1
  done
}

start() {
  local nodes=2
  while [ $# -gt 0 ]; do
    case $1 in
      --nodes) [ $# -ge 2 ] || usage; nodes=$2; shift 2 ;;
      --nodes=*) nodes=${1#--nodes=}; shift ;;
      *) usage ;;
    esac
  done
  if ! [[ $nodes =~ ^[0-9]+$ ]] || [ "$nodes" -lt 1 ] || [ "$nodes" -gt 64 ]; then
    die "--nodes wants a number from 1 to 64, not '$nodes'"
  fi
  check_prereqs

  local t0=$SECONDS running=0 complete=1 i n
  install -d -m 0755 "$state"
  write_conf "$nodes"
  if slurmctld_pid >/dev/null; then running=1; else complete=0; fi
  for n in $(node_names); do slurmd_pid "$n" >/dev/null && running=1; done
  for ((i = 1; i <= nodes; i++)); do slurmd_pid "node$i" >/dev/null || complete=0; done
  munge_works || complete=0
  if [ "$running" = 1 ] && ! cmp -s "$conf" "$conf.new"; then
    rm -f "$conf.new"
    die "a cluster with another configuration runs in $state: run 'slurm/cluster.sh stop' first"
  fi
  if [ "$complete" = 1 ] && all_nodes_up "$nodes"; then
    rm -f "$conf.new"
    write_plugstack
    say "already running ($nodes nodes)"
    echo "export SLURM_CONF=$conf"
    return 0
  fi
  mv "$conf.new" "$conf"
  prepare_dirs "$nodes"
  write_plugstack

  start_munge

  if ! slurmctld_pid >/dev/null; then
    # -i: start even if the saved state cannot be read (e.g. after a crash).
    SLURM_CONF=$conf slurmctld -i -f "$conf" ||
      die "slurmctld did not start; its log:
$(tail -n 20 "$state/log/slurmctld.log" 2>/dev/null)"
  fi
  local started=() log_lines=()
  for ((i = 1; i <= nodes; i++)); do
    n=node$i
    slurmd_pid "$n" >/dev/null && continue
    touch "$state/log/slurmd-$n.log"
    log_lines+=("$(wc -l <"$state/log/slurmd-$n.log")")
    started+=("$n")
    # Its own UTS namespace, whose hostname is the node's name; the
    # namespace is recorded for stop: everything slurmd starts (slurmstepd,
    # the jobs) stays in it. slurmd forks into the background and writes
    # its pid file.
    # shellcheck disable=SC2016 # expanded by that sh
    SLURM_CONF=$state/node/$n/slurm.conf unshare --uts -- sh -c \
      'hostname "$1" && readlink /proc/self/ns/uts >"$3" && exec slurmd -f "$2" -N "$1"' \
      sh "$n" "$state/node/$n/slurm.conf" "$state/run/slurmd-$n.uts" ||
      die "slurmd for $n did not start; its log:
$(tail -n 20 "$state/log/slurmd-$n.log" 2>/dev/null)"
  done

  local deadline=$((SECONDS + start_timeout)) pid
  # Ready: every slurmd started now has logged that it listens, and
  # slurmctld sees every node idle.
  while ! { slurmds_listen && all_nodes_up "$nodes"; }; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      {
        echo "$me: error: the nodes are not all idle after ${start_timeout}s:"
        SLURM_CONF=$conf sinfo -N 2>&1 || true
        echo "--- $state/log/slurmctld.log (end)"
        tail -n 15 "$state/log/slurmctld.log" 2>/dev/null || true
        for ((i = 1; i <= nodes; i++)); do
          echo "--- $state/log/slurmd-node$i.log (end)"
          tail -n 15 "$state/log/slurmd-node$i.log" 2>/dev/null || true
        done
      } >&2
      exit 1
    fi
    sleep 0.1
  done
  say "$nodes node$([ "$nodes" = 1 ] || echo s) idle after $((SECONDS - t0))s; state in $state"
  echo "export SLURM_CONF=$conf"
}

# Pids of the processes in UTS namespace $1 (a readlink of /proc/PID/ns/uts),
# and of all their descendants (a container may have its own namespace).
pids_in_uts() {
  local ns=$1 p pid ppid changed
  local -A in=()
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/uts" 2>/dev/null)" = "$ns" ] && in[${p#/proc/}]=1
  done
  [ "${#in[@]}" -gt 0 ] || return 0
  local table
  table=$(ps -e -o pid=,ppid=)
  changed=1
  while [ "$changed" = 1 ]; do
    changed=0
    while read -r pid ppid; do
      if [ -n "${in[$ppid]:-}" ] && [ -z "${in[$pid]:-}" ]; then
        in[$pid]=1
        changed=1
      fi
    done <<<"$table"
  done
  printf '%s\n' "${!in[@]}"
}

stop() {
  local i n f ns left
  if [ ! -f "$conf" ]; then
    say "no cluster in $state"
    return 0
  fi
  # Cancel every job, so that no slurmstepd or payload outlives its slurmd.
  if slurmctld_pid >/dev/null; then
    local jobs
    jobs=$(SLURM_CONF=$conf timeout 10 squeue -h -o %A 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      say "cancelling jobs: ${jobs//$'\n'/ }"
      # shellcheck disable=SC2086
      SLURM_CONF=$conf timeout 10 scancel $jobs 2>/dev/null || true
      # squeue lists unfinished jobs only (including COMPLETING ones).
      for ((i = 0; i < (killwait + 10) * 10; i++)); do
        [ -z "$(SLURM_CONF=$conf timeout 10 squeue -h -o %A 2>/dev/null || true)" ] && break
        sleep 0.1
      done
    fi
  fi
  local pidfiles=("$state/run/slurmctld.pid")
  for n in $(node_names); do
    pidfiles+=("$state/run/slurmd-$n.pid")
  done
  stop_pidfiles "${pidfiles[@]}"
  # Anything left in a node's namespace (a slurmstepd, a job's process)
  # belongs to this cluster: kill it.
  for f in "$state"/run/slurmd-*.uts; do
    [ -f "$f" ] || continue
    ns=$(cat "$f")
    # Never this script's own namespace (a stale file after a reboot).
    if [ -z "$ns" ] || [ "$ns" = "$(readlink /proc/self/ns/uts)" ]; then
      rm -f "$f"
      continue
    fi
    left=$(pids_in_uts "$ns")
    if [ -n "$left" ]; then
      say "killing what is left on $(basename "$f" .uts): ${left//$'\n'/ }"
      # shellcheck disable=SC2086
      kill -KILL $left 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        [ -z "$(pids_in_uts "$ns")" ] && break
        sleep 0.1
      done
    fi
    rm -f "$f"
  done
  rm -rf "${pmix_base:?}"
  # munged only if this script started it.
  stop_pidfiles "$state/munge/munged.pid"
  say "stopped"
}

status() {
  local rc=0 n pid
  if [ ! -f "$conf" ]; then
    say "no cluster in $state"
    return 3
  fi
  echo "state:     $state"
  echo "SLURM_CONF=$conf"
  if ! munge_works; then
    echo "munged:    NOT running"
    rc=3
  elif pid=$(live_pid "$state/munge/munged.pid"); then
    echo "munged:    running (pid $pid)"
  else
    echo "munged:    running (not started by cluster.sh: stop leaves it)"
  fi
  if pid=$(slurmctld_pid); then echo "slurmctld: running (pid $pid)"; else echo "slurmctld: NOT running"; rc=3; fi
  for n in $(node_names); do
    if pid=$(slurmd_pid "$n"); then
      echo "slurmd $n: running (pid $pid)"
    else
      echo "slurmd $n: NOT running"
      rc=3
    fi
  done
  if [ "$rc" = 0 ]; then
    SLURM_CONF=$conf timeout 10 sinfo -N || rc=3
  fi
  return "$rc"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
  start | stop | status) ;;
  *) usage ;;
esac
[ "$(id -u)" = 0 ] || die "run as root: it starts munged, slurmctld and slurmd"
case $cmd in
  start) start "$@" ;;
  stop) [ $# = 0 ] || usage; stop ;;
  status) [ $# = 0 ] || usage; status ;;
esac
