"""The local runner: shards in a thread pool, a bounded number in flight, a progress bar.

The heavy work inside a stage (Parquet decoding, Arrow kernels, the automaton, Torch) runs in native code,
much of it without the GIL, so threads use the cores without copying batches between processes. At most
`workers + 1` shards are in flight, so memory stays flat whatever the input size.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from laionet.io.inputs import InputPlan, Shard
from laionet.io.shards import ShardStore
from laionet.progress import Progress
from laionet.runners.base import Stage, process_shard


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


def _run(stage: Stage, plan: InputPlan, shards: list[Shard], store: ShardStore, workers: int, bar: Progress) -> None:
    todo = iter(shards)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"laionet-{stage.name}")
    running: dict = {}
    try:
        while True:
            for shard in todo:
                running[pool.submit(process_shard, stage, plan, shard, store)] = shard
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
