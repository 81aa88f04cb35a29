#!/usr/bin/env bash
# agentmesh chaos on the embedded five-node cluster: a calm run (no faults)
# for the message throughput to compare with, then the chaos run (by
# default ten minutes at 1.5 actor kills per second, a node crash and a
# partition every 20 s on average, a hostile PBFT replica). Both write to
# bench-results/chaos-calm and bench-results/chaos (`agentmesh bench summary`
# lists both).
# CHAOS_DURATION, CALM_DURATION and CHAOS_SEED change the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
seed=${CHAOS_SEED:-1}
./target/release/agentmesh chaos --seed "$seed" --duration "${CALM_DURATION:-120s}" \
  --kill-rate 0 --node-kill-every 0 --partitions off --byzantine off \
  --out bench-results/chaos-calm
./target/release/agentmesh chaos --seed "$seed" --duration "${CHAOS_DURATION:-600s}" \
  --kill-rate 1.5 --out bench-results/chaos
