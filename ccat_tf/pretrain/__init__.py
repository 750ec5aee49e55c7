"""Pretrained initial weights: corpus, tensorflow-datasets builders, degradations, training.

``snakemake --cores all pretrained`` (workflow/rules/pretrain.smk) runs, for every task and
model size, ``ccat-tf pretrain`` -> :func:`ccat_tf.pretrain.train.pretrain`, which writes
``ccat_tf/weights/<task>_<model_size>.cat``. ``initial_weights: deblur | upscale |
human_matting`` in a training run then starts from those weights.

* :mod:`.sources`: the images (from installed packages) and their licences; ``gather``.
* :mod:`.builders`: ``LocalImages`` and ``PairedImages`` tensorflow-datasets builders.
* :mod:`.degrade`: stateless-seeded tf.data pair generators (deblur, upscale, human matting).
* :mod:`.train`: the training loop that saves the .cat.
"""
