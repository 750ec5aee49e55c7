#!/usr/bin/env bash
# Set up and run the test suite (the default selection: everything but the `slow` and `slurm` marks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/pytest -q "$@"
