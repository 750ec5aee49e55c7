"""The number format training computes in: float32, or bfloat16 where the CPU has it natively.

Keras' ``mixed_bfloat16`` policy keeps every weight (and Adam's slots, the moving average, the
loss) in float32 and computes the convolutions in bfloat16. oneDNN runs those convolutions on the
CPU's own bfloat16 instructions where it has them: Intel AMX's tile units (``amx_bf16``: Xeon
Sapphire Rapids and later; a small network's training step took 0.075 s instead of 0.145 s) and
AVX-512 BF16's dot products (``avx512_bf16``: AMD Zen 4 and later, Intel Cooper Lake; 0.147 s
instead of 0.224 s on a 2-core AMD EPYC; benchmarks/RESULTS.md, "Training in bfloat16"). Without
either the format is emulated and slower, so ``auto`` chooses it only where the CPU says it has
one of them, and never on a GPU (no GPU has run it here; ``bfloat16`` asks for it anywhere).
Inference's ``optimize_for_speed_and_memory`` uses the same test: on such a CPU it computes in
bfloat16 rather than in emulated float16. The network's head, its residual sum and the colour
branch stay float32 in every format (:func:`ccat_tf.models.build_model`), and a .cat always holds
the float32 network (:meth:`ccat_tf.model.Model.save`), so what a run writes does not depend on
where it ran.
"""

from __future__ import annotations

from pathlib import Path

#: The setting's choices (TrainSettings.precision).
PRECISIONS = ("auto", "float32", "bfloat16")
#: The Keras dtype policy of each format (None: Keras' default, float32).
POLICIES = {"float32": None, "bfloat16": "mixed_bfloat16"}
CPUINFO = Path("/proc/cpuinfo")
#: The /proc/cpuinfo flags of native bfloat16 arithmetic, and what each is called in a message.
NATIVE_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16"}


def native_bfloat16(cpuinfo: Path | None = None) -> str | None:
    """What computes bfloat16 natively on this CPU (``"AMX"`` or ``"AVX-512 BF16"``, from the
    flags of Linux's /proc/cpuinfo or ``cpuinfo``), or None: no such flag, or no such file."""
    try:
        text = (cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return next((name for flag, name in NATIVE_FLAGS.items() if flag in flags), None)
    return None


def resolve(setting: str, on_gpu: bool, cpuinfo: Path | None = None) -> tuple[str, str]:
    """``(format, why)`` for the ``precision`` setting: ``float32`` or ``bfloat16``."""
    if setting != "auto":
        return setting, f"precision {setting} (as set)"
    if on_gpu:
        return "float32", "precision auto: float32 (on GPUs)"
    native = native_bfloat16(cpuinfo)
    if native:
        return "bfloat16", f"precision auto: bfloat16 (this CPU has {native}: 1.5-2x the steps)"
    return "float32", "precision auto: float32 (this CPU has no native bfloat16)"


def policy(fmt: str) -> str | None:
    """The Keras dtype policy for ``build_model`` of a resolved format."""
    return POLICIES[fmt]
