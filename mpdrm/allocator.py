"""Let glibc's malloc keep freed memory, so that training stops page-faulting every step.

A training step on the CPU allocates and frees the same large tensors every time
(activations, gradients, and under DP-SGD the per-sample gradients: tens of MB per layer).
glibc hands blocks above its mmap threshold straight back to the kernel on ``free``, so
the next step's block is fresh memory again and every 4 KiB page of it faults on first
touch: on MPDRM ``base`` that is about a fifth of a step (``benchmarks/allocator.py``).
:func:`keep_freed_memory` serves large blocks from the heap instead and never trims it,
so freed memory is reused. The cost: the process keeps its peak memory (RSS does not
shrink after the peak), as PyTorch's own CUDA caching allocator does on a GPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1

_applied = False


@functools.cache
def is_glibc() -> bool:
    """Whether this process runs on glibc (Linux), the allocator :func:`keep_freed_memory` tunes."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Serve every block from glibc's heap and never return freed heap memory to the kernel.

    Process-wide and irreversible; calling it again does nothing.

    Returns
    -------
    bool
        True where applied (glibc), False elsewhere (macOS, musl, Windows: nothing changes).
    """
    global _applied
    if _applied:
        return True
    if not is_glibc():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, _NEVER_TRIM) != 1:
        return False
    _applied = True
    return True
