#!/usr/bin/env bash
# The mesh-100 cluster sending as fast as it accepts: each storm agent sends
# every tick until its node refuses (256 messages awaiting acknowledgement
# per node set the pace; refusals are counted, never dropped silently).
# Writes bench-results/max-throughput/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
./target/release/agentmesh bench storm \
  --nodes 100 --k 20 --topology partial-mesh --agents-per-node 1 \
  --rate 0 --inflight-max 256 --payload 64 --duration 30s --warmup 2s --seed 1 \
  --out bench-results/max-throughput "$@"
