"""What a stage is, and the part of running one that every runner shares.

A stage turns the Arrow table of one shard into named output tables plus counts. It holds no global
state; `setup()` loads whatever it needs (a model) once per worker. Runners only decide where
`process_shard` runs: the local runner in a thread pool, the Ray runner in Ray Data tasks or actors.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from laionet.io.inputs import InputPlan, Shard, read_shard
from laionet.io.shards import ShardStore


class Stage(Protocol):
    name: str
    outputs: tuple[str, ...]  # names of the tables `process` returns
    columns: list[str] | None  # input columns it reads (None: all)
    uses_gpu: bool

    def setup(self) -> None: ...

    def process(self, table: pa.Table, shard: Shard) -> tuple[dict[str, pa.Table], dict]: ...

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
    """Read, process and write one shard; returns its counts. Safe to run again after a crash."""
    table = read_shard(shard, plan, stage.columns)
    tables, counts = stage.process(table, shard)
    store.write(shard.name, tables, counts)
    return counts


def run_stage(stage: Stage, plan: InputPlan, outputs: dict[str, str | Path | PartsFolder], workdir: str | Path,
              fingerprint: dict, runner: str = "local", workers: int | None = None,
              ray_address: str | None = None, progress: bool = True) -> StageResult:
    store = ShardStore(workdir, list(stage.outputs), fingerprint)
    store.open()
    pending = [s for s in plan.shards if not store.is_done(s.name)]
    started = time.time()
    if runner == "ray":
        from laionet.runners.ray_runner import run_shards_ray

        run_shards_ray(stage, plan, pending, store, ray_address=ray_address, workers=workers,
                       progress=progress)
    else:
        from laionet.runners.local import run_shards_local

        run_shards_local(stage, plan, pending, store, workers=workers, progress=progress)
    names = [s.name for s in plan.shards]
    counts: Counter = Counter()
    for name in names:
        counts.update(store.stats(name))
    result = StageResult(counts=dict(counts), shards=len(names), resumed=len(names) - len(pending))
    input_schema = _input_schema(plan, stage.columns)
    for output, path in outputs.items():
        if isinstance(path, PartsFolder):
            result.part_rows[output] = store.publish_parts(output, names, path.path)
            result.rows[output] = sum(result.part_rows[output])
            continue
        schema = stage.output_schema(output, input_schema)
        result.rows[output] = store.concatenate(output, names, path, schema)
    store.reset()
    result.seconds = time.time() - started
    return result


def _input_schema(plan: InputPlan, columns: list[str] | None) -> pa.Schema:
    from laionet.io.inputs import open_parquet

    schema = open_parquet(plan.files[0]).schema_arrow
    wanted = plan.columns if columns is None else [c for c in columns if c != "uid"]
    fields = [pa.field("uid", pa.int64())] + [schema.field(c) for c in wanted if c in schema.names and c != "uid"]
    return pa.schema(fields)
