#!/usr/bin/env bash
# The Raft control plane at 3, 5 and 7 replicas, fsync on: one client, 128
# clients at once, three leader crashes, and snapshots of 1, 10 and 100 MB
# sent to a fresh replica (three runs each, the median reported).
# Writes bench-results/raft/<replicas>/{report.json,report.md,*.svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
for replicas in 3 5 7; do
  snapshots=(--snapshot-mb 1,10,100)
  [ "$replicas" = 3 ] || snapshots=(--snapshot-mb)
  ./target/release/agentmesh bench raft \
    --replicas "$replicas" --clients 128 --payload 128 --duration 10s \
    --single-duration 5s --warmup 1s --failovers 3 "${snapshots[@]}" \
    --out "bench-results/raft/$replicas" "$@"
done
