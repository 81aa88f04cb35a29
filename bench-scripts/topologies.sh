#!/usr/bin/env bash
# Every overlay shape at 100 nodes under the same storm (20 messages/s per
# agent, so the sparse shapes are not simply saturated), side by side.
# Writes bench-results/topologies/<shape>/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
for shape in full-mesh partial-mesh ring hierarchical hub-spoke sharded; do
  echo "== $shape" >&2
  ./target/release/agentmesh bench storm \
    --nodes 100 --topology "$shape" --rate 20 --duration 20s --warmup 2s \
    --out "bench-results/topologies/$shape" "$@" > /dev/null || echo "$shape: refused or lost messages (see above, or its report)" >&2
done
