"""The local runner: shards in a thread pool, a bounded number in flight, a progress bar.

The heavy work inside a stage (Parquet decoding, the automaton, Torch) releases the GIL, so threads use
all cores without copying batches between processes. At most `workers + 1` shards are in flight, so
memory stays flat whatever the input size.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from laionet.io.inputs import InputPlan, Shard
from laionet.io.shards import ShardStore
from laionet.progress import Progress
from laionet.runners.base import Stage, process_shard


def default_workers(stage: Stage) -> int:
    return 1 if stage.uses_gpu else max(1, min(os.cpu_count() or 1, 8))


def run_shards_local(stage: Stage, plan: InputPlan, shards: list[Shard], store: ShardStore,
                     workers: int | None = None, progress: bool = True) -> None:
    total_rows = sum(s.num_rows for s in plan.shards)
    done_rows = total_rows - sum(s.num_rows for s in shards)
    bar = Progress(stage.name, total_rows, initial=done_rows, enabled=progress)
    if not shards:
        bar.close()
        return
    stage.setup()
    workers = workers or default_workers(stage)
    queue = list(reversed(shards))
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"laionet-{stage.name}") as pool:
            running = {}
            while queue or running:
                while queue and len(running) < workers + 1:
                    shard = queue.pop()
                    running[pool.submit(process_shard, stage, plan, shard, store)] = shard
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    shard = running.pop(future)
                    future.result()  # re-raise a worker's error here, in the main thread
                    bar.update(shard.num_rows)
    except BaseException:
        for future in list(locals().get("running", {})):
            future.cancel()
        raise
    finally:
        bar.close()
