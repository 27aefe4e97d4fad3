#!/usr/bin/env bash
# The whole test suite: install what is missing, build, and run every test,
# including those that start a real PostgreSQL server of their own.
# Usage: scripts/test.sh [preset]   (default, asan, tsan, coverage)
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-default}"
./scripts/build.sh "$preset"
ctest --preset "$preset"
