#!/usr/bin/env bash
# How set-up time, latency and memory grow with the node count: 10 to 1,000
# nodes in one process, k from the adaptive rule, 10 messages/s per agent.
# Writes bench-results/scale/<nodes>/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
for nodes in 10 50 100 250 500 1000; do
  echo "== $nodes nodes" >&2
  ./target/release/agentmesh bench storm \
    --nodes "$nodes" --rate 10 --duration 20s --warmup 2s \
    --out "bench-results/scale/$nodes" "$@" > /dev/null || echo "$nodes nodes: messages lost (see its report)" >&2
done
