#!/usr/bin/env bash
# The PBFT group over QUIC, signatures on: 4, 7 and 10 replicas with one
# client (latency) and 200 clients (throughput, adaptive batches); at 4
# replicas also 10 clients (the competitor's setting), fixed batches of 1
# and 10, and a silent and an equivocating primary (view change).
# Writes bench-results/pbft/<case>/{report.json,report.md,*.svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
run() {
  local name=$1
  shift
  ./target/release/agentmesh bench pbft --duration 10s --warmup 1s \
    --out "bench-results/pbft/$name" "$@"
}
for replicas in 4 7 10; do
  run "$replicas-one-client" --replicas "$replicas" --clients 1
  run "$replicas-200-clients" --replicas "$replicas" --clients 200
done
run 4-10-clients --replicas 4 --clients 10
run 4-batch-1 --replicas 4 --clients 200 --batch 1
run 4-batch-10 --replicas 4 --clients 200 --batch 10
run 4-silent-primary --replicas 4 --clients 200 --faulty 1 --behaviour silent
run 4-equivocating-primary --replicas 4 --clients 200 --faulty 1 --behaviour equivocate
