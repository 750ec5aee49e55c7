"""The Snakemake workflow's Python: everything the rules need that is not a rule.

The Snakefile and ``workflow/rules/*.smk`` hold only thin glue; they import these modules and hand
them Snakemake's objects (``config``, ``workflow.basedir``, ``WorkflowError``) as arguments, so
every function here is importable and testable without Snakemake:

* :mod:`ccat_tf.workflow.config_checks` -- config.yaml / --configfile / --config checks with
  one-line errors, input frames that must exist, the pretraining settings file;
* :mod:`ccat_tf.workflow.shots` -- :class:`~ccat_tf.workflow.shots.ShotPlan`: each shot's
  effective settings, the rules' params (what reruns what), paths, inference chunks, targets;
* :mod:`ccat_tf.workflow.images` -- jobs that handle images in the Snakemake process: the latest
  contact sheet / preview, gathering the chunks' frames, the output_samples oiiotool line;
* :mod:`ccat_tf.workflow.shell` -- how rules run ``python -m ccat_tf`` (the shell prefix).

No TensorFlow nor numpy is imported at planning time: a 50-shot dry run stays fast
(benchmarks/bench_dry_run.py).
"""

from __future__ import annotations

from ccat_tf.errors import CcatError


class ConfigError(CcatError):
    """A problem with the workflow's config or the files it names (one line, ``config: ...``).

    The default error of this package's functions; the workflow passes ``WorkflowError``
    instead, which Snakemake prints as a one-line error.
    """
