#!/usr/bin/env bash
# Set up and run the whole CopyCat job on the bundled demo shot (demo/bikes):
# validate -> cache -> train -> loss.csv -> graph.png -> overview -> inference of all 48 frames.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/snakemake --cores all --profile profiles/default "$@"
