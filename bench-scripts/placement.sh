#!/usr/bin/env bash
# The placement planner: bin-packing quality, plan and rebalancing speed,
# geography. Pass OR-Library's files to measure on the standard instances
# (they are public but not ours to ship: download binpack1.txt ... from
# OR-Library and give their folder as BINPACK_DIR); without them the bench
# generates instances of the same classes.
# Writes bench-results/placement/{report.json,report.md,quality.svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
instances=()
if [ -n "${BINPACK_DIR:-}" ]; then
  for file in "$BINPACK_DIR"/binpack*.txt; do
    instances+=(--instances "$file")
  done
fi
./target/release/agentmesh bench placement --out bench-results/placement "${instances[@]}" "$@"
