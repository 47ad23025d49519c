"""What a stage is, and the part of running one that every runner shares.

A stage turns the Arrow table of one shard into named output tables plus counts. It holds no global
state; `setup()` loads whatever it needs (a model) once per worker. Runners only decide where
`process_shard` runs: the local runner in a thread pool, the Ray runner in Ray Data tasks or actors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from laionet.io.inputs import InputPlan, Shard, iter_shard, read_shard
from laionet.io.shards import ShardStore


class Stage(Protocol):
    name: str
    outputs: tuple[str, ...]  # names of the tables `process` returns
    columns: list[str] | None  # input columns it reads (None: all)
    uses_gpu: bool

    def setup(self) -> None: ...

    def process(self, table: pa.Table, shard: Shard) -> tuple[dict[str, pa.Table], dict]: ...

    # optional: `process_batches(tables, shard)` takes the shard as an iterator of consecutive slices
    # instead (see `process_shard`); the match stage has it

    def output_schema(self, output: str, input_schema: pa.Schema) -> pa.Schema: ...


@dataclass(frozen=True)
class PartsFolder:
    """An output published as a folder of parts (one per shard, renamed, not concatenated), for outputs
    too big for one file: pass it as a value of `run_stage`'s `outputs`."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))


@dataclass
class StageResult:
    counts: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)  # rows written per output
    part_rows: dict = field(default_factory=dict)  # rows per part, for PartsFolder outputs
    shards: int = 0
    resumed: int = 0
    seconds: float = 0.0


def process_shard(stage: Stage, plan: InputPlan, shard: Shard, store: ShardStore) -> dict:
    """Read, process and write one shard; returns its counts. Safe to run again after a crash.

    A stage with a `process_batches(tables, shard)` method gets the shard as consecutive slices, each
    decoded just before it is needed (`iter_shard`); others get it whole."""
    if hasattr(stage, "process_batches"):
        tables, counts = stage.process_batches(iter_shard(shard, plan, stage.columns), shard)
    else:
        tables, counts = stage.process(read_shard(shard, plan, stage.columns), shard)
    store.write(shard.name, tables, counts)
    return counts


def run_stage(stage: Stage, plan: InputPlan, outputs: dict[str, str | Path | PartsFolder], workdir: str | Path,
              fingerprint: dict, runner: str = "local", workers: int | None = None,
              ray_address: str | None = None, progress: bool = True) -> StageResult:
    store = ShardStore(workdir, list(stage.outputs), fingerprint)
    store.open()
    names = [s.name for s in plan.shards]
    done_before = {s.index for s in plan.shards if store.is_done(s.name)}  # by an earlier, interrupted run
    pending = [s for s in plan.shards if s.index not in done_before]
    started = time.time()
    # single-file outputs are written while the shards run, each shard as soon as it and those before it
    # are done (the runners report finished shards through `shard_done`)
    input_schema = _input_schema(plan, stage.columns)
    concats = {output: store.concatenation(output, names, path, stage.output_schema(output, input_schema))
               for output, path in outputs.items() if not isinstance(path, PartsFolder)}

    def shard_done(shard: Shard) -> None:
        for concat in concats.values():
            concat.ready(shard.index)

    for index in done_before:  # appended with the first new shard, or at the end
        for concat in concats.values():
            concat.ready(index, write=False)
    try:
        if runner == "ray":
            from laionet.runners.ray_runner import run_shards_ray

            run_shards_ray(stage, plan, pending, store, ray_address=ray_address, workers=workers,
                           progress=progress, shard_done=shard_done)
        else:
            from laionet.runners.local import run_shards_local

            run_shards_local(stage, plan, pending, store, workers=workers, progress=progress,
                             shard_done=shard_done)
        counts: dict = {}
        for name in names:
            add_counts(counts, store.stats(name))
        result = StageResult(counts=counts, shards=len(names), resumed=len(names) - len(pending))
        for output, path in outputs.items():
            if isinstance(path, PartsFolder):
                result.part_rows[output] = store.publish_parts(output, names, path.path)
                result.rows[output] = sum(result.part_rows[output])
            else:
                result.rows[output] = concats[output].finish()
    finally:
        for concat in concats.values():
            concat.abort()
    store.reset()
    result.seconds = time.time() - started
    return result


def add_counts(total: dict, counts: dict) -> dict:
    """Add a shard's counts into `total`: numbers are summed, and so are nested dicts of numbers (such as
    match's per-class counts)."""
    for key, value in counts.items():
        if isinstance(value, dict):
            add_counts(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def _input_schema(plan: InputPlan, columns: list[str] | None) -> pa.Schema:
    from laionet.io.inputs import open_parquet

    schema = open_parquet(plan.files[0]).schema_arrow
    wanted = plan.columns if columns is None else [c for c in columns if c != "uid"]
    fields = [pa.field("uid", pa.int64())] + [schema.field(c) for c in wanted if c in schema.names and c != "uid"]
    return pa.schema(fields)
