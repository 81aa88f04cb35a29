#!/usr/bin/env bash
# The competitor's scenario: 100 nodes in one process, a partial mesh with
# k = 20, one storm agent per node sending 100 signed messages/s (10,000/s
# offered), 30 s measured after a 2 s warm-up.
# Writes bench-results/mesh-100/{report.json,report.md,*.svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
./target/release/agentmesh bench storm \
  --nodes 100 --k 20 --topology partial-mesh --agents-per-node 1 \
  --rate 100 --payload 64 --duration 30s --warmup 2s --seed 1 \
  --out bench-results/mesh-100 "$@"
