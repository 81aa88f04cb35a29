#!/usr/bin/env bash
# How set-up time, latency and memory grow with the node count: 10 to 1,000
# nodes in one process, k from the adaptive rule, the same total offered
# load at every size (2,000 messages/s over all agents), so what changes
# is the size, not the load. Writes bench-results/scale/<nodes>/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
total_rate=2000
for nodes in 10 50 100 250 500 1000; do
  echo "== $nodes nodes" >&2
  rate=$(awk -v total="$total_rate" -v nodes="$nodes" 'BEGIN { print total / nodes }')
  ./target/release/agentmesh bench storm \
    --nodes "$nodes" --rate "$rate" --duration 20s --warmup 2s \
    --out "bench-results/scale/$nodes" "$@" > /dev/null || echo "$nodes nodes: messages lost (see its report)" >&2
done
