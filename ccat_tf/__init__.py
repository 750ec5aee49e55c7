"""ccat_tf: CopyCat-style training and Inference on TensorFlow/Keras.

The public API is imported lazily so that ``import ccat_tf`` (and ``ccat-tf --help``) does not pay
for TensorFlow's start-up:

>>> import ccat_tf
>>> report = ccat_tf.validate_dataset(input="in.####.png", ground_truth="gt.####.png", frames="1-8")
>>> model_file = ccat_tf.train(input=..., ground_truth=..., frames=..., data_directory="dd")
>>> ccat_tf.infer(model_file, input="in.####.png", frames="1-48", output="out.####.exr")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "train": "ccat_tf.training",
    "validate_dataset": "ccat_tf.dataset",
    "load_model": "ccat_tf.catfile",
    "read_metadata": "ccat_tf.catfile",
    "infer": "ccat_tf.inference",
    "export": "ccat_tf.exporting",
    "open_model": "ccat_tf.model",
    "read_info": "ccat_tf.model",
    "Model": "ccat_tf.model",
    "ModelInfo": "ccat_tf.model_info",
    "list_runs": "ccat_tf.runs",
    "rename_run": "ccat_tf.runs",
    "summary_to_csv": "ccat_tf.summary",
    "plot_graph": "ccat_tf.graph",
    "TrainSettings": "ccat_tf.settings",
    "InferSettings": "ccat_tf.settings",
    "CcatError": "ccat_tf.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ccat_tf' has no attribute {name!r}")
