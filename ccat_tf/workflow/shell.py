"""How the workflow's shell rules run ``python -m ccat_tf`` and ``oiiotool``."""

from __future__ import annotations

import os
import shlex
import sys


def uses_conda(workflow) -> bool:
    """Whether Snakemake runs with ``--sdm conda`` (``workflow`` is Snakemake's object)."""
    try:
        from snakemake.settings.types import DeploymentMethod

        return DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    except (ImportError, AttributeError):
        return False


def shell_prefix(basedir: str, conda: bool, python: str = sys.executable) -> str:
    """The prefix of every shell rule, for Snakemake's ``shell.prefix()``.

    Without ``--sdm conda`` (``conda`` false) the tools come from the environment of ``python``,
    the one running Snakemake (so ``.venv/bin/snakemake`` works without activating the venv);
    with it, from the rule's conda env, which holds ccat_tf's dependencies but not the package
    (envs/*.yaml): the repository root ``basedir`` on PYTHONPATH makes ``python -m ccat_tf``
    import this checkout in either case.
    """
    prefix = "set -euo pipefail; "
    prefix += f'export PYTHONPATH={shlex.quote(basedir)}"${{PYTHONPATH:+:$PYTHONPATH}}"; '
    if not conda:
        bindir = os.path.dirname(python)
        prefix += f'export PATH={shlex.quote(bindir)}:"$PATH"; '
    # Snakemake formats the prefix like a shell command: braces must be doubled.
    return prefix.replace("{", "{{").replace("}", "}}")
