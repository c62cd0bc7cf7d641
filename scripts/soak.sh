#!/usr/bin/env bash
# Soak test: a steady load (mixed priorities, some jobs cancelled) on a
# 4-worker powerhose cluster while a random worker is SIGKILLed every 1-3 s;
# prints requests, cancels, errors by kind and the broker's and workers'
# memory at start and end. Not part of CI.
# Usage: scripts/soak.sh [SECONDS]   (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
exec target/release/powerhose-bench --soak "${1:-600}"
