#!/usr/bin/env bash
# Create .venv (if missing) and install ccat_tf with everything the demo and the tests need.
# Needs only python3 (3.10+) and the package registry. GPU users: CCAT_TF_EXTRAS=gpu,workflow,export,pretrain,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${CCAT_TF_EXTRAS:-workflow,export,pretrain,dev}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=".venv/.ccat_tf-installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # Older versions installed tensorflow-cpu; it would shadow the `tensorflow` now required.
    if .venv/bin/python -m pip show --quiet tensorflow-cpu >/dev/null 2>&1; then
        .venv/bin/python -m pip uninstall --quiet --yes tensorflow-cpu
    fi
    .venv/bin/python -m pip install --quiet -e ".[${extras}]"
    touch "$stamp"
fi
