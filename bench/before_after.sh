#!/usr/bin/env bash
# Run one benchmark in two checkouts, alternately, in the same run: the figures of a
# change ("after", this tree) beside those of the code before it ("before", another
# checkout with its own .venv, e.g. `git worktree add ../before <commit>` and
# `make -C ../before .venv/.installed`). Shared machines are noisy: alternating spreads
# the noise over both; the load average is printed with every run.
#
#   bench/before_after.sh ../before bench/issuance.py --rounds 3
#   ROUNDS=3 bench/before_after.sh ../before bench/est_throughput.py --count 200
set -euo pipefail
before=$(cd "$1" && pwd); shift
script=$1; shift
after=$(cd "$(dirname "$0")/.." && pwd)
for round in $(seq "${ROUNDS:-2}"); do
  for side in before after; do
    tree=${!side}
    echo "== round $round: $side ($(git -C "$tree" rev-parse --short HEAD)); load: $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd "$tree" && .venv/bin/python "$script" "$@")
  done
done
