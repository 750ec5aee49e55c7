#!/usr/bin/env bash
# Start the one-node CI SLURM cluster (idempotent) and run the SLURM tests against it.
# Run as root from anywhere; assumes the project venv at .venv. Extra arguments go to pytest,
# e.g. `bash .ci/slurm/run_tests.sh -m "slurm and slow"` for the full workflow test as well.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash .ci/slurm/setup.sh
if [[ $# -eq 0 ]]; then
    set -- -m "slurm and not slow"
fi
exec .venv/bin/pytest -q -rs "$@" tests/test_slurm.py
