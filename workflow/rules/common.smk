# Glue between Snakemake and the workflow's Python, which lives in the package
# (ccat_tf/workflow/: config checks, each shot's settings and params, paths, chunks, images).
# Snakemake puts the Snakefile's folder, the repository root, first on sys.path, so this imports
# the checkout's ccat_tf (the same code the rules run through PYTHONPATH, see shell_prefix);
# `pip install -e .` puts the same folder there for everything else. Snakemake's own objects
# (config, workflow.basedir, WorkflowError) are handed to those functions here.

from snakemake.exceptions import WorkflowError

from ccat_tf.workflow import config_checks, images
from ccat_tf.workflow.shell import shell_prefix, uses_conda
from ccat_tf.workflow.shots import ShotPlan
