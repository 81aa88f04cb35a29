#!/usr/bin/env bash
# Request/reply between two agents on two nodes in one process, 1,000
# requests/s for 10 s to a Rust responder and then to a Python one (a
# process agent speaking Maelstrom's protocol).
# Writes bench-results/agents/{report.json,report.md}.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
./target/release/agentmesh bench agents --rate 1000 --duration 10s --warmup 1s \
  --out bench-results/agents "$@"
