#!/usr/bin/env bash
# Publish/subscribe fan-out: one publisher, one subscriber on each of 100
# nodes (a partial mesh, k = 20) in one process; 100 messages/s for 10 s
# measured after a 2 s warm-up, so 10,000 copies/s delivered.
# Writes bench-results/fanout/{report.json,report.md}.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
./target/release/agentmesh bench fanout --nodes 100 --k 20 --rate 100 \
  --duration 10s --warmup 2s --out bench-results/fanout "$@"
