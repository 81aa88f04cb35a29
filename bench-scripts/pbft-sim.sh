#!/usr/bin/env bash
# The PBFT simulation over many more seeds than the test suite runs: every
# Byzantine behaviour on up to f replicas under loss, duplication,
# reordering and a partition, and shifting partitions with the faulty
# replica restarting. SIM_SEEDS (default 500) seeds per case.
set -euo pipefail
cd "$(dirname "$0")/.."
SIM_SEEDS=${SIM_SEEDS:-500} cargo test --release --test suite pbft:: -- --nocapture
