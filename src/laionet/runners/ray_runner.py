"""The Ray runner: shards as Ray Data items, processed by a pool of actors that each set the stage up once.

Each actor loads the stage's resources (the automaton, a model) in its constructor, then runs
`process_shard` for one shard per call; the shard's outputs are written by the actor itself into the
store's work folder (a shared filesystem on a cluster), exactly as the local runner writes them, so the
driver's concatenation, resume and final files are the same whichever runner ran the shards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import contextmanager

from laionet.errors import LaionetError
from laionet.io.inputs import InputPlan, Shard
from laionet.io.shards import ShardStore
from laionet.memory import worker_env
from laionet.progress import Progress
from laionet.runners.base import Stage, process_shard

OBJECT_STORE_BYTES = 256 * 1024 * 1024  # shards travel as indices, not data: a small store is plenty


class ShardWorker:
    """A Ray Data actor: sets the stage up once, then processes the shards of each batch."""

    def __init__(self, stage: Stage, plan: InputPlan, store: ShardStore, cwd: str):
        if os.path.isdir(cwd):  # relative input and work paths resolve as they do in the driver
            os.chdir(cwd)
        self.stage, self.plan, self.store = stage, plan, store
        self.shards = {s.index: s for s in plan.shards}
        self.error = ""
        try:
            stage.setup()  # once per actor: the automaton or the model loads once per worker
        except LaionetError as exc:
            self.error = str(exc)  # reported with the first shard (see __call__)

    def __call__(self, batch: dict) -> dict:
        rows, errors = [], []
        for index in batch["shard"]:
            shard = self.shards[int(index)]
            try:
                if self.error:
                    raise LaionetError(self.error)
                process_shard(self.stage, self.plan, shard, self.store)
            except LaionetError as exc:
                # returned, not raised: Ray drops a raised error's cause on the way to the driver, and
                # a mistake in the user's input is not worth a retry
                rows.append(0)
                errors.append(str(exc))
                continue
            rows.append(shard.num_rows)
            errors.append("")
        return {"shard": list(batch["shard"]), "rows": rows, "error": errors}


def run_shards_ray(stage: Stage, plan: InputPlan, shards: list[Shard], store: ShardStore,
                   ray_address: str | None = None, workers: int | None = None, progress: bool = True,
                   shard_done: Callable[[Shard], None] | None = None) -> None:
    """Process `shards` on Ray; `shard_done(shard)` is called in the driver as each one is written."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise LaionetError("the ray runner needs Ray: pip install 'laionet[ray]'") from None
    total_rows = sum(s.num_rows for s in plan.shards)
    done_rows = total_rows - sum(s.num_rows for s in shards)
    if not shards:
        Progress(stage.name, total_rows, initial=done_rows, enabled=progress).close()
        return
    started_here = init_ray(ray, ray_address)
    bar = None
    try:
        with quiet_ray_data(ray):
            size, remote_args = _pool(ray, stage, workers, len(shards))
            # One block per shard, so each shard is its own task and finished shards stream back one by one.
            dataset = ray.data.from_items([{"shard": s.index} for s in shards], override_num_blocks=len(shards))
            results = dataset.map_batches(
                ShardWorker, batch_size=1, batch_format="numpy",
                fn_constructor_args=(stage, plan, store, os.getcwd()),
                compute=ray.data.ActorPoolStrategy(size=size), **remote_args)
            bar = Progress(stage.name, total_rows, initial=done_rows, enabled=progress)
            for row in results.iter_rows():
                if row["error"]:
                    raise LaionetError(row["error"])
                bar.update(int(row["rows"]))
                if shard_done is not None:
                    shard_done(plan.shards[int(row["shard"])])
    finally:
        if bar is not None:
            bar.close()
        if started_here:
            ray.shutdown()


@contextmanager
def quiet_ray_data(ray):
    """No Ray Data progress bars (ours is the only bar) and no execution-plan chatter around it."""
    context = ray.data.DataContext.get_current()
    data_log = logging.getLogger("ray.data")
    saved = context.enable_progress_bars, data_log.level
    try:
        context.enable_progress_bars = False
        data_log.setLevel(logging.ERROR)
        yield
    finally:
        context.enable_progress_bars = saved[0]
        data_log.setLevel(saved[1])


def init_ray(ray, address: str | None) -> bool:
    """Join the cluster at `address`, or an already initialised Ray; else start a local one (True)."""
    if ray.is_initialized():
        return False
    options = dict(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                   logging_level=logging.WARNING)
    if worker_env():  # the workers keep freed memory as laionet's own processes do (laionet.memory)
        options["runtime_env"] = {"env_vars": worker_env()}
    if address is None:
        options.update(num_cpus=os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES)
    try:
        ray.init(**options)
    except ConnectionError as exc:
        raise LaionetError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    return address is None


def _pool(ray, stage: Stage, workers: int | None, shards: int) -> tuple[int, dict]:
    """The actor count (no more than there are shards) and each actor's resources."""
    cluster = ray.cluster_resources()
    if stage.uses_gpu:
        size = min(shards, workers or max(1, int(cluster.get("GPU", 1))))
        return size, {"num_gpus": 1}
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = max(1, int(cluster.get("CPU", 1)))
    # max_workers bounds the actors on one machine (the score stage: one model using every core)
    cap = (getattr(stage, "max_workers", None) or cpus) * max(1, len(nodes))
    size = min(shards, workers or max(1, min(cpus, cap)))
    # Ray pins an actor's Torch/OpenMP threads to its CPUs: give each actor its share of a node
    node_cpus = max((int(n.get("CPU", 1)) for n in nodes), default=1)
    return size, {"num_cpus": max(1, min(node_cpus, cpus // size))}

