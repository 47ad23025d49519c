"""The local runner: shards in a pool of workers, a bounded number in flight, a progress bar.

Most stages run in threads: their heavy work (Parquet decoding, Arrow kernels, Torch) runs in native code
without the GIL. A stage that marks itself `fork_safe` (the paper matcher, whose byte translation and
Hyperscan scan hold the GIL) runs in forked worker processes instead, on Linux: the children inherit the
built automaton, write their shards themselves and return only counts, so nothing big is pickled (and
they skip pandas, keep freed memory and use no huge pages: see `_forked_init`). At most `workers + 1`
shards are in flight, so memory stays flat whatever the input size.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait

from laionet.io.inputs import InputPlan, Shard
from laionet.io.shards import ShardStore
from laionet.memory import keep_freed_memory
from laionet.progress import Progress
from laionet.runners.base import Stage, process_shard

# What forked workers run: set by the parent just before it forks, inherited by the children.
_FORKED: tuple | None = None


def default_workers(stage: Stage) -> int:
    cores = os.cpu_count() or 1
    return max(1, min(cores, getattr(stage, "max_workers", None) or cores))


def run_shards_local(stage: Stage, plan: InputPlan, shards: list[Shard], store: ShardStore,
                     workers: int | None = None, progress: bool = True,
                     shard_done: Callable[[Shard], None] | None = None) -> None:
    """Process `shards`; `shard_done(shard)` is called in this thread as each one is written."""
    total_rows = sum(s.num_rows for s in plan.shards)
    bar = Progress(stage.name, total_rows, initial=total_rows - sum(s.num_rows for s in shards), enabled=progress)
    try:
        if shards:
            stage.setup()
            _run(stage, plan, shards, store, workers or default_workers(stage), bar, shard_done)
    finally:
        bar.close()


def _forked_init() -> None:
    """Run once in each forked worker, before its first shard."""
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas)
    keep_freed_memory()  # the CLI did this already; a caller of the Python API may not have
    _no_huge_pages()


class _NoPandas:
    """An import hook that makes pandas unimportable.

    A fork-safe stage uses no pandas, but pyarrow imports it (0.3 s in each worker) at its first conversion
    of a Python object (pa.scalar, pa.array, to_numpy), only to check for pandas types. With this hook
    pyarrow takes pandas as absent."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] == "pandas":
            raise ModuleNotFoundError("pandas is not available in laionet's forked workers", name=name)
        return None


def _no_huge_pages() -> None:
    """Turn transparent huge pages off in this worker.

    Arrow asks for huge pages for its big buffers. A huge page takes a whole free 2 MiB block, and in a
    virtual machine such a block has often been handed back to the host, so its first touch is slow: on
    a 2-core VM, `laionet match` of 4M captions after a few idle seconds took 1.8 s with huge pages in
    its workers, 1.45-1.55 s without (and no more CPU time)."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
    except (OSError, AttributeError):
        pass


def _forked_shard(index: int) -> dict:
    stage, plan, store = _FORKED
    return process_shard(stage, plan, plan.shards[index], store)


def _pool(stage: Stage, plan: InputPlan, store: ShardStore, workers: int) -> tuple[Executor, bool]:
    global _FORKED
    if workers > 1 and getattr(stage, "fork_safe", False) and sys.platform.startswith("linux"):
        _FORKED = (stage, plan, store)
        # the children's garbage collector then skips the inherited objects, so it does not write to
        # (and so copy) their pages
        gc.freeze()
        with warnings.catch_warnings():  # the children use no library that forking would upset
            warnings.simplefilter("ignore")
            return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_forked_init), True
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"laionet-{stage.name}"), False


def _run(stage: Stage, plan: InputPlan, shards: list[Shard], store: ShardStore, workers: int, bar: Progress,
         shard_done: Callable[[Shard], None] | None) -> None:
    todo = iter(shards)
    pool, forked = _pool(stage, plan, store, workers)
    running: dict = {}
    try:
        while True:
            for shard in todo:
                future = pool.submit(_forked_shard, shard.index) if forked else \
                    pool.submit(process_shard, stage, plan, shard, store)
                running[future] = shard
                if len(running) > workers:
                    break
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                shard = running.pop(future)
                future.result()  # a worker's error surfaces here, in the main thread
                bar.update(shard.num_rows)
                if shard_done is not None:
                    shard_done(shard)
    finally:
        # on an error or Ctrl-C, start nothing new; shards already written stay for the resume
        pool.shutdown(wait=True, cancel_futures=True)
        if forked:
            gc.unfreeze()
