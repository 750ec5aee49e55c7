"""What the machine offers: free memory, GPUs, and the automatic batch size.

CopyCat sizes its batch from free GPU memory. We do the same on GPUs (free memory from
``nvidia-smi``) and, on CPU, from available RAM; both are deliberately conservative, and the
result never exceeds the number of pairs.
"""

from __future__ import annotations

import shutil
import subprocess

# Bytes of memory one training sample needs per activation element: float32 forward values kept
# for the backward pass, their gradients, and workspace.
_BYTES_PER_ACTIVATION = 4 * 3
# On CPU a bigger batch buys little speed once the cores are busy; cap it to keep steps short.
_CPU_BATCH_CAP = 8
_GPU_BATCH_CAP = 32


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def gpu_free_memory_bytes() -> list[int]:
    """Free memory of each NVIDIA GPU, from nvidia-smi; empty when there is none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return [int(float(v)) * 2**20 for v in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def activation_elements(model_size: str, crop: int) -> int:
    """Activation elements of one crop through the network (sum over layers' outputs)."""
    from ccat_tf.models import PRESETS

    preset = PRESETS[model_size]
    total = 0
    size = crop * crop
    for level, filters in enumerate(preset.filters):
        per_level = preset.convs_per_level * (2 if level < len(preset.filters) - 1 else 1) + 3
        total += size * filters * per_level
        size //= 4
    return total


def auto_batch_size(
    model_size: str,
    crop: int,
    pairs: int,
    *,
    notices: list[str] | None = None,
    use_gpu: bool = True,
) -> int:
    """The batch size ``batch_size: auto`` resolves to."""
    per_sample = activation_elements(model_size, crop) * _BYTES_PER_ACTIVATION
    gpus = gpu_free_memory_bytes() if use_gpu else []
    if gpus:
        budget = min(gpus) * 0.6 * len(gpus)
        cap, where = _GPU_BATCH_CAP, f"{len(gpus)} GPU(s) with {min(gpus) / 2**30:.1f} GiB free"
    else:
        budget = available_memory_bytes() * 0.3
        cap, where = _CPU_BATCH_CAP, f"{available_memory_bytes() / 2**30:.1f} GiB of free RAM"
    fit = int(budget // max(per_sample, 1))
    batch = max(1, min(pairs, cap, fit))
    if notices is not None:
        notices.append(f"batch_size auto: {batch} (from {where}, {pairs} pairs)")
    return batch
