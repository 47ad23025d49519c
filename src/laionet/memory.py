"""Keep freed memory for reuse: glibc's allocator settings for laionet's processes.

laionet's work is batch after batch of buffers of the same sizes: a model's activations (a batch of 64
images through EfficientNet-Lite0 allocates and frees blocks of ~100 MB per layer), a match worker's
haystack (a few MB per slice). By default glibc serves a block over 128 KiB with a fresh mmap and
unmaps it on free, so the kernel maps and zeroes every page again for the next batch. On the 2-core
development VM that was half the run time of CPU inference (a plain timm loop: 27 images/s, 7.8 s of
system time for 200 images; with these settings 59 images/s and 0.8 s) and half the page faults of
`laionet match`. The cost: a process keeps up to THRESHOLD bytes of freed memory instead of returning
it to the system, which for a batch job is its working set anyway.
"""

from __future__ import annotations

import ctypes
import os

THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap, and up to 1 GiB of free heap is kept
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters

# The same settings as environment variables, read by glibc when a process starts: for Ray workers.
ENV = {"MALLOC_MMAP_THRESHOLD_": str(THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(THRESHOLD)}


def user_tuned() -> bool:
    """The user set glibc's malloc settings themselves: theirs win."""
    return any(name in os.environ for name in ENV) or "malloc." in os.environ.get("GLIBC_TUNABLES", "")


def worker_env() -> dict[str, str]:
    """Environment variables that give a new process (a Ray worker) the same settings."""
    return {} if user_tuned() else dict(ENV)


def keep_freed_memory() -> bool:
    """Apply the settings to this process (no-op off glibc, or when the user set their own); True if
    applied."""
    if user_tuned():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator behaves differently
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
