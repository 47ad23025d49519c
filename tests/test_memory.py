"""laionet.memory: freed buffers are reused rather than mapped and zeroed again for every batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from laionet import memory

CYCLES = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from laionet.memory import keep_freed_memory
    assert keep_freed_memory()
def cycle():  # one batch: a few big buffers, freed at its end
    buffers = [np.ones(n * 2**20 // 8) for n in (40, 100, 60, 20)]
    del buffers
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str, **env) -> int:
    out = subprocess.run([sys.executable, "-c", CYCLES, mode], check=True, capture_output=True, text=True,
                         env={**_clean_env(), **env})
    return int(out.stdout)


def _clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k not in memory.ENV and k != "GLIBC_TUNABLES"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_later_batches_reuse_freed_memory():
    default = page_faults("default")
    if default < 1000:
        pytest.skip(f"this allocator keeps freed memory by itself ({default} page faults)")
    assert page_faults("keep") < default / 20


def test_the_users_own_settings_win(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert memory.user_tuned() and memory.worker_env() == {} and not memory.keep_freed_memory()
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert memory.user_tuned()
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert memory.worker_env() == memory.ENV


def test_ray_workers_get_the_settings(monkeypatch):
    """A Ray started (or joined) by laionet passes the settings to its workers' environment."""
    from laionet.runners.ray_runner import init_ray

    for name in (*memory.ENV, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    calls = []

    class FakeRay:
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**options):
            calls.append(options)

    assert init_ray(FakeRay, None) is True
    assert calls[0]["runtime_env"] == {"env_vars": memory.ENV}
