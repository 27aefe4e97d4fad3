#!/usr/bin/env bash
# The main job on the embedded default (SQLite): install what is missing,
# build, and run the backend conformance self-check through noodle-harness.
# (Once the scenario runner lands, this runs the smoke scenario suite.)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh default
./build/noodle-harness selfcheck --backend sqlite
