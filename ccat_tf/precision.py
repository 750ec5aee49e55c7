"""The number format training computes in: float32, or bfloat16 where the CPU has it natively.

Keras' ``mixed_bfloat16`` policy keeps every weight (and Adam's slots, the moving average, the
loss) in float32 and computes the convolutions in bfloat16. On a CPU with Intel AMX (``amx_bf16``:
Xeon Sapphire Rapids and later), oneDNN runs those convolutions on the tile units: a small
network's training step took 0.075 s instead of 0.145 s (benchmarks/RESULTS.md, "Training in
bfloat16"). Without native bfloat16 the format is emulated and slower, so ``auto`` chooses it only
where the CPU says it has AMX, and never on a GPU (no GPU has run it here; ``bfloat16`` asks for
it anywhere). Inference's ``optimize_for_speed_and_memory`` uses the same test: on such a CPU it
computes in bfloat16 rather than in emulated float16. The network's head, its residual sum and
the colour branch stay float32 in every format (:func:`ccat_tf.models.build_model`), and a .cat
always holds the float32 network (:meth:`ccat_tf.model.Model.save`), so what a run writes does
not depend on where it ran.
"""

from __future__ import annotations

from pathlib import Path

#: The setting's choices (TrainSettings.precision).
PRECISIONS = ("auto", "float32", "bfloat16")
#: The Keras dtype policy of each format (None: Keras' default, float32).
POLICIES = {"float32": None, "bfloat16": "mixed_bfloat16"}
CPUINFO = Path("/proc/cpuinfo")


def native_bfloat16(cpuinfo: Path | None = None) -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (the ``amx_bf16`` flag in
    Linux's /proc/cpuinfo, or ``cpuinfo``; False where there is no such file)."""
    try:
        text = (cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return "amx_bf16" in line.split(":", 1)[-1].split()
    return False


def resolve(setting: str, on_gpu: bool, cpuinfo: Path | None = None) -> tuple[str, str]:
    """``(format, why)`` for the ``precision`` setting: ``float32`` or ``bfloat16``."""
    if setting != "auto":
        return setting, f"precision {setting} (as set)"
    if on_gpu:
        return "float32", "precision auto: float32 (on GPUs)"
    if native_bfloat16(cpuinfo):
        return "bfloat16", "precision auto: bfloat16 (this CPU has AMX: about 2x the steps)"
    return "float32", "precision auto: float32 (this CPU has no native bfloat16)"


def policy(fmt: str) -> str | None:
    """The Keras dtype policy for ``build_model`` of a resolved format."""
    return POLICIES[fmt]
