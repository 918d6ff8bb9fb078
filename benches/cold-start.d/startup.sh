#!/bin/bash
# rfake's own start-up (issue 18): `rfake --version`, a warm and a cold `true` from the demo
# image, this build against another (CS_RFAKE_BEFORE, cold-start.sh's --before), and ch-run
# on the unpacked directory; alternating rounds (CS_ROUNDS), each a hyperfine run of every
# line (CS_RUNS x 10 runs for --version and warm, CS_RUNS x 4 for cold). Run by
# benches/cold-start.sh (see README here) or alone, as root:
#
#   sudo CS_USER=rfake-test CS_RFAKE_BEFORE=/path/to/old/rfake benches/cold-start.d/startup.sh
#
# Each launch is the binary itself (no `env` in front: the configuration is in the
# environment of hyperfine), so these times are a little lower than cold-start.sh's part 1.
# Output: "startup" lines (median of the rounds' medians, range) and this build's time over
# the other's, per round. Without CS_RFAKE_BEFORE only this build and ch-run are timed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/../.." && pwd)
: "${CS_USER:?CS_USER: the user to run launches as}"
rfake=${CS_RFAKE:-$project/target/release/rfake}
before=${CS_RFAKE_BEFORE:-}
demo=${CS_DEMO:-/var/tmp/rfake-static/images/demo.sqfs}
demo_dir=${CS_DEMO_DIR:-${demo%.sqfs}}
rounds=${CS_ROUNDS:-5}
runs=${CS_RUNS:-10}
ch_run=${CH_RUN:-$(command -v ch-run || true)}

scratch=$(mktemp -d /tmp/rfake-startup.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
chmod 1777 "$scratch"
printf 'image_server = "builtin"\nwarm_linger = 0\n' >"$scratch/cold.toml"
printf 'image_server = "builtin"\nwarm_linger = 30\n' >"$scratch/warm.toml"
: >"$scratch/site.toml"
# One copy of the image per build: each build's warm line joins its own warm mount.
cp "$demo" "$scratch/this.sqfs"
cp "$demo" "$scratch/before.sqfs"
chmod a+r "$scratch"/*

as_user() { runuser -u "$CS_USER" -- env RFAKE_CONFIG="$scratch/site.toml" "$@"; }
for ((r = 1; r <= rounds; r++)); do
    lines=("$rfake --version" "$rfake exec $scratch/this.sqfs true")
    [[ -z $before ]] || lines+=("$before --version" "$before exec $scratch/before.sqfs true")
    as_user RFAKE_USER_CONFIG="$scratch/warm.toml" hyperfine -N -w 10 -r $((runs * 10)) \
        "${lines[@]}" --export-json "$scratch/warm-$r.json" >/dev/null 2>&1
    lines=("$rfake exec $scratch/this.sqfs true")
    [[ -z $before ]] || lines+=("$before exec $scratch/before.sqfs true")
    [[ -z $ch_run || ! -d $demo_dir ]] || lines+=("$ch_run $demo_dir -- true")
    as_user RFAKE_USER_CONFIG="$scratch/cold.toml" hyperfine -N -w 3 -r $((runs * 4)) \
        "${lines[@]}" --export-json "$scratch/cold-$r.json" >/dev/null 2>&1
done

python3 - "$scratch" "$rounds" "$rfake" "$before" <<'EOF'
import json, statistics as st, sys
scratch, rounds, this, before = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = {}
for r in range(1, rounds + 1):
    for kind in ('warm', 'cold'):
        for res in json.load(open(f'{scratch}/{kind}-{r}.json'))['results']:
            words = res['command'].split()
            who = 'this' if words[0] == this else 'before' if words[0] == before else 'ch-run'
            what = '--version' if '--version' in words else 'ch-run dir' if who == 'ch-run' else kind
            rows.setdefault((what, who), []).append(st.median(res['times']) * 1000)
def show(v):
    return f'{st.median(v):.2f} ms ({min(v):.2f}-{max(v):.2f})'
ch = rows.get(('ch-run dir', 'ch-run'))
for what in ('--version', 'warm', 'cold'):
    mine = rows[(what, 'this')]
    line = f'startup {what:9} this build {show(mine)}'
    if (what, 'before') in rows:
        other = rows[(what, 'before')]
        ratio = [a / b for a, b in zip(mine, other)]
        line += f', before {show(other)}, this/before {st.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f})'
    if ch and what != '--version':
        ratio = [a / b for a, b in zip(mine, ch)]
        line += f', this/ch-run dir {st.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f})'
    print(line + f'; {rounds} rounds')
if ch:
    print(f'startup ch-run dir {show(ch)}; {rounds} rounds')
EOF
