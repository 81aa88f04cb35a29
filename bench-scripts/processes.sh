#!/usr/bin/env bash
# The mesh-100 scenario with its nodes spread over 2 and 4 worker processes
# (`--processes`), beside mesh-100.sh's single process: what separate
# processes (separate allocators, runtimes and sockets, as on separate
# hosts) cost or save on the same cores. Writes bench-results/processes/<P>/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
for processes in 2 4; do
  echo "== $processes processes" >&2
  ./target/release/agentmesh bench storm \
    --nodes 100 --k 20 --topology partial-mesh --agents-per-node 1 \
    --rate 100 --payload 64 --duration 30s --warmup 2s --seed 1 \
    --processes "$processes" --out "bench-results/processes/$processes" "$@" > /dev/null \
    || echo "$processes processes: messages lost (see its report)" >&2
done
