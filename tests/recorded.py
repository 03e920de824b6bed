"""Launch recordings shared by the test modules of one session (each costs a GPU-mode subprocess)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def gpu_check_stages() -> dict:
    """The launches of every recorded stage of gpu_check.sh at batch 128 on sm_90 (benchmarks/budget.py); its
    "training" stage is one alexnet training step in bf16, channels-last."""
    from benchmarks import budget

    return budget.record_in_subprocess(128)
