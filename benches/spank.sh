#!/usr/bin/env bash
# The SPANK plugin's cost (issue 15): a 16-rank step of `true` in an image,
#
#   plugin:  srun -n16 --rfake-image=IMAGE true
#   exec:    srun -n16 rfake exec IMAGE true        target: plugin <= 1.0 x exec
#   bare:    srun -n16 true                         target: plugin <= 1.5 x bare
#
# on one node (-N1 -n16) and on 3 nodes with 16 ranks each
# (-N3 --ntasks-per-node=16), as steps of one allocation per shape
# (salloc --no-shell; srun --jobid), so that the scheduler's allocation of a
# job, which takes from 0 to 1 s here and is the same for all three, is not
# measured. The three commands alternate within a round
# (the order rotating from round to round), so a machine that gets busier
# or quieter during the run shifts all three alike; each round gives a
# ratio, and the summary is the median ratio with the rounds' range.
# A benchmark, not a test.
#
#   benches/spank.sh [IMAGE]       # as the unprivileged user
#
# Needs the test cluster with the plugin (as root:
# make -C spank install LIBDIR=/var/tmp/rfake-slurm/spank &&
# slurm/cluster.sh start --nodes 3) and SLURM_CONF (default
# /var/tmp/rfake-slurm/slurm.conf). IMAGE defaults to target/images/demo.sqfs
# and must be where the cluster's images= allows (/var/tmp, /home).
# Environment: RFAKE_BIN (default target/release/rfake; the plugin takes
# rfake from PATH, which this puts first), ROUNDS (default 10), OUT
# (default target/bench: spank.csv, one line per run).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
export SLURM_CONF=${SLURM_CONF:-/var/tmp/rfake-slurm/slurm.conf}
rfake=$(realpath "${RFAKE_BIN:-$top/target/release/rfake}")
image=$(realpath "${1:-$top/target/images/demo.sqfs}")
rounds=${ROUNDS:-10}
out=${OUT:-target/bench}
mkdir -p "$out"
out=$(realpath "$out")
me=spank.sh
[[ $(id -u) != 0 ]] || { echo "$me: run as an unprivileged user" >&2; exit 2; }
[[ -x $rfake && -f $image ]] || { echo "$me: need $rfake and $image" >&2; exit 2; }
sinfo >/dev/null || { echo "$me: no cluster at $SLURM_CONF (slurm/cluster.sh start --nodes 3)" >&2; exit 2; }
srun --help | grep -q -- --rfake-image ||
  { echo "$me: the cluster has no rfake SPANK plugin (make -C spank install; see slurm/README.md)" >&2; exit 2; }
export PATH=$(dirname "$rfake"):$PATH
# From the home directory, which containers bind (no start-directory warning).
cd "$HOME"

declare -A cmd=(
  [bare]="true"
  [exec]="$rfake exec $image true"
  [plugin]="--rfake-image=$image true"
)
csv=$out/spank.csv
echo "nodes,round,what,seconds" >"$csv"
alloc=
trap '[ -z "$alloc" ] || scancel "$alloc"' EXIT
for nodes in 1 3; do
  alloc=$(salloc --no-shell -N"$nodes" --ntasks-per-node=16 2>&1 | sed -n 's/.*Granted job allocation \([0-9]*\).*/\1/p')
  [ -n "$alloc" ] || { echo "$me: salloc -N$nodes --ntasks-per-node=16 failed" >&2; exit 1; }
  if [ "$nodes" = 1 ]; then shape="--jobid=$alloc -N1 -n16"; else shape="--jobid=$alloc -N3 --ntasks-per-node=16"; fi
  # One of each first, not counted: the page cache, the warm mount's
  # first start, slurmd's first step.
  for w in bare exec plugin; do
    # shellcheck disable=SC2086
    srun $shape ${cmd[$w]} >/dev/null
  done
  order=(bare exec plugin)
  for ((r = 1; r <= rounds; r++)); do
    for w in "${order[@]}"; do
      t0=$(date +%s%N)
      # shellcheck disable=SC2086
      srun $shape ${cmd[$w]} >/dev/null
      t1=$(date +%s%N)
      echo "$nodes,$r,$w,$(((t1 - t0) / 1000))e-6" >>"$csv"
    done
    order=("${order[@]:1}" "${order[0]}")
  done
  scancel "$alloc"
  alloc=
done

python3 - "$csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for nodes in ("1", "3"):
    t = {}
    for r in rows:
        if r["nodes"] == nodes:
            t.setdefault(r["round"], {})[r["what"]] = float(r["seconds"])
    label = "1 node, 16 ranks" if nodes == "1" else "3 nodes, 16 ranks each"
    print(label)
    for w in ("bare", "exec", "plugin"):
        v = [x[w] for x in t.values()]
        print(f"  {w:7} median {statistics.median(v)*1000:6.0f} ms  (min {min(v)*1000:.0f}, max {max(v)*1000:.0f}, {len(v)} runs)")
    for a, b, target in (("plugin", "exec", 1.0), ("plugin", "bare", 1.5)):
        q = sorted(x[a] / x[b] for x in t.values())
        print(f"  {a}/{b}: median {statistics.median(q):.2f} (rounds {q[0]:.2f}-{q[-1]:.2f}), target <= {target}")
PY
