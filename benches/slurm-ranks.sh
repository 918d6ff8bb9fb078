#!/usr/bin/env bash
# Ranks per node: `srun -N1 -n N rfake exec IMAGE true` for N = 1, 2, 4, 8,
# 16, joined (one container per node, the default under srun) and with
# --no-join (a container per rank), side by side in one hyperfine run; then
# how many squashfuse processes the node had while a step ran. A benchmark,
# not a test.
#
#   benches/slurm-ranks.sh [IMAGE]     # as the unprivileged user
#
# Needs a running test cluster (as root: slurm/cluster.sh start) and
# SLURM_CONF pointing at it (default /var/tmp/rfake-slurm/slurm.conf).
# IMAGE defaults to target/images/demo.sqfs. Target: the 16-rank step takes
# at most 3 x the 1-rank step when joined, with one squashfuse per node.
# Environment: RFAKE_BIN (default target/release/rfake), RUNS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
export SLURM_CONF=${SLURM_CONF:-/var/tmp/rfake-slurm/slurm.conf}
rfake=$(realpath "${RFAKE_BIN:-$top/target/release/rfake}")
image=$(realpath "${1:-$top/target/images/demo.sqfs}")
runs=${RUNS:-5}
out=${OUT:-target/bench}
mkdir -p "$out"
out=$(realpath "$out")
# From the home directory, which containers bind (no start-directory warning).
cd "$HOME"
[[ $(id -u) != 0 ]] || { echo "slurm-ranks.sh: run as an unprivileged user" >&2; exit 2; }
[[ -x $rfake && -f $image ]] || { echo "slurm-ranks.sh: need $rfake and $image" >&2; exit 2; }
sinfo >/dev/null || { echo "slurm-ranks.sh: no cluster at $SLURM_CONF (slurm/cluster.sh start)" >&2; exit 2; }

cmds=()
for n in 1 2 4 8 16; do
  cmds+=(-n "srun only n=$n" "srun -N1 -n $n true")
  cmds+=(-n "joined n=$n" "srun -N1 -n $n $rfake exec $image true")
  cmds+=(-n "no-join n=$n" "srun -N1 -n $n $rfake exec --no-join $image true")
done
hyperfine --warmup 1 --runs "$runs" --export-json "$out/slurm-ranks.json" "${cmds[@]}" >/dev/null

# squashfuse processes of one 16-rank step, counted from the host while it
# runs (by a tag in their environment, inherited from srun).
count() {
  local tag=rfake-bench-$$-$RANDOM
  RFAKE_BENCH_TAG=$tag srun -N1 -n 16 "$rfake" exec "$@" "$image" sleep 2 &
  local job=$!
  sleep 1.2
  local n=0 p
  for p in /proc/[0-9]*; do
    case $(cat "$p/comm" 2>/dev/null) in squashfuse*) ;; *) continue ;; esac
    tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "RFAKE_BENCH_TAG=$tag" && n=$((n + 1))
  done
  wait "$job"
  echo "$n"
}
joined_servers=$(count)
nojoin_servers=$(count --no-join)

python3 - "$out/slurm-ranks.json" "$joined_servers" "$nojoin_servers" <<'PY'
import json, sys
res = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
print(f"{'ranks':>5} {'srun only ms':>13} {'joined ms':>10} {'no-join ms':>11}")
for n in (1, 2, 4, 8, 16):
    print(f"{n:>5} {res[f'srun only n={n}'] * 1000:>13.0f} {res[f'joined n={n}'] * 1000:>10.0f} {res[f'no-join n={n}'] * 1000:>11.0f}")
j = res["joined n=16"] / res["joined n=1"]
k = res["no-join n=16"] / res["no-join n=1"]
print(f"16 ranks / 1 rank: joined {j:.2f} (target <= 3), no-join {k:.2f}")
print(f"squashfuse processes on the node during a 16-rank step: joined {sys.argv[2]}, no-join {sys.argv[3]}")
PY
