#!/usr/bin/env bash
# Every report.json under bench-results/ in one Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
./target/release/agentmesh bench summary bench-results "$@"
