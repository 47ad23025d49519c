"""The local runner: shards in a pool of workers, a bounded number in flight, a progress bar.

Most stages run in threads: their heavy work (Parquet decoding, Arrow kernels, Torch) runs in native code
without the GIL. A stage that marks itself `fork_safe` (the paper matcher, whose byte translation and
Hyperscan scan hold the GIL) runs in forked worker processes instead, on Linux: the children inherit the
built automaton, write their shards themselves and return only counts, so nothing big is pickled. At most
`workers + 1` shards are in flight, so memory stays flat whatever the input size.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait

from laionet.io.inputs import InputPlan, Shard
from laionet.io.shards import ShardStore
from laionet.progress import Progress
from laionet.runners.base import Stage, process_shard

# What forked workers run: set by the parent just before it forks, inherited by the children.
_FORKED: tuple | None = None


def default_workers(stage: Stage) -> int:
    cores = os.cpu_count() or 1
    return max(1, min(cores, getattr(stage, "max_workers", None) or cores))


def run_shards_local(stage: Stage, plan: InputPlan, shards: list[Shard], store: ShardStore,
                     workers: int | None = None, progress: bool = True) -> None:
    total_rows = sum(s.num_rows for s in plan.shards)
    bar = Progress(stage.name, total_rows, initial=total_rows - sum(s.num_rows for s in shards), enabled=progress)
    try:
        if shards:
            stage.setup()
            _run(stage, plan, shards, store, workers or default_workers(stage), bar)
    finally:
        bar.close()


def _forked_shard(index: int) -> dict:
    stage, plan, store = _FORKED
    return process_shard(stage, plan, plan.shards[index], store)


def _pool(stage: Stage, plan: InputPlan, store: ShardStore, workers: int) -> tuple[Executor, bool]:
    global _FORKED
    if workers > 1 and getattr(stage, "fork_safe", False) and sys.platform.startswith("linux"):
        _FORKED = (stage, plan, store)
        with warnings.catch_warnings():  # the children use no library that forking would upset
            warnings.simplefilter("ignore")
            return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")), True
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"laionet-{stage.name}"), False


def _run(stage: Stage, plan: InputPlan, shards: list[Shard], store: ShardStore, workers: int, bar: Progress) -> None:
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
    finally:
        # on an error or Ctrl-C, start nothing new; shards already written stay for the resume
        pool.shutdown(wait=True, cancel_futures=True)
