"""Caption embeddings: the text side of `laionet embed`, a Stage run shard by shard by either runner.

Per shard: identical captions are encoded once and in length-sorted batches (as the score stage does),
and the rows go out as one part of the embedding folder (uid, embedding), in the shard's row order.
A null caption is dropped and counted (`null_text_dropped`) unless `null_text` is given: the original
embedded the string 'None' in its place (spec §9.3), which `--null-text None` reproduces.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from laionet.embed.store import embedding_schema, embedding_table
from laionet.io.inputs import Columns, Shard, plan_inputs
from laionet.score.encoders import check_encoder, encode_unique, load_text_encoder, pick_device

OUTPUT = "embeddings"
TEXT_SHARD_ROWS = 65_536  # rows per shard, i.e. per part: 128 MiB of float32 at dim 512


@dataclass(frozen=True)
class TextEmbedOptions:
    encoder: str
    batch_size: int | None = None  # None: by device (score.encoders.default_batch_size)
    device: str | None = None
    checkpoint: str | None = None
    precision: str = "auto"
    dtype: str = "float32"
    null_text: str | None = None  # embed a null caption as this string (the original: 'None'); else drop it
    shard_rows: int = TEXT_SHARD_ROWS


class TextEmbedStage:
    name = "embed"
    outputs = (OUTPUT,)
    max_workers = 1  # one model; Torch already uses every core (or the GPU) inside a batch

    def __init__(self, text_col: str, options: TextEmbedOptions, encoder_factory=load_text_encoder):
        self.spec = check_encoder(options.encoder, options.checkpoint, options.precision)
        self.text_col = text_col
        self.columns = [text_col]
        self.options = options
        self._factory = encoder_factory
        self.encoder = None

    @property
    def uses_gpu(self) -> bool:
        return not pick_device(self.options.device).startswith("cpu")

    def setup(self) -> None:
        if self.encoder is None:
            self.encoder = self._factory(self.spec, device=self.options.device, checkpoint=self.options.checkpoint,
                                         precision=self.options.precision)

    def __getstate__(self) -> dict:
        # send the stage to Ray workers without its model: each worker loads it in setup()
        return dict(self.__dict__, encoder=None)

    def process(self, table: pa.Table, shard: Shard) -> tuple[dict[str, pa.Table], dict]:
        self.setup()
        texts = table.column(self.text_col)
        dropped = 0
        if self.options.null_text is not None:
            texts = pc.fill_null(texts, self.options.null_text)
        elif texts.null_count:
            keep = pc.is_valid(texts)
            dropped = texts.null_count
            table, texts = table.filter(keep), texts.filter(keep)
        vectors, unique = encode_unique(self.encoder, texts.to_pylist(), self.options.batch_size)
        part = embedding_table(table.column("uid"), vectors, self.options.dtype)
        return {OUTPUT: part}, {"rows_in": table.num_rows + dropped, "rows_embedded": part.num_rows,
                                "null_text_dropped": dropped, "unique_texts": unique}

    def output_schema(self, output: str, input_schema: pa.Schema) -> pa.Schema:
        return embedding_schema(self.encoder.dim if self.encoder else 0, self.options.dtype)


def embed_texts(inputs: list[str], out: Path, options: TextEmbedOptions, columns: Columns = Columns(),
                runner: str = "local", ray_address: str | None = None, workers: int | None = None,
                progress: bool = True, overwrite: bool = False, encoder_factory=load_text_encoder) -> dict:
    """Embed the captions of `inputs` into the folder `out`; returns the summary for the manifest."""
    from laionet.embed.folder import prepare_output
    from laionet.io.shards import ShardStore, workdir_beside
    from laionet.runners.base import PartsFolder, run_stage

    # nulls are the stage's business (dropped and counted, or replaced), not a reason to refuse the input
    columns = Columns(text=columns.text, url=columns.url, id=columns.id, nsfw=columns.nsfw, skip_null_text=True)
    plan = plan_inputs(inputs, columns, shard_rows=options.shard_rows)
    stage = TextEmbedStage(plan.text_col, options, encoder_factory)
    workdir = workdir_beside(out)
    if overwrite:
        ShardStore(workdir, [], {}).reset()
    prepare_output(out, workdir, overwrite)
    fingerprint = {"stage": "embed-text", "files": plan.fingerprints, "text_col": plan.text_col,
                   "id_col": plan.id_col, "uid_scheme": plan.uid_scheme, "shards": len(plan.shards),
                   "options": asdict(options)}
    result = run_stage(stage, plan, {OUTPUT: PartsFolder(out)}, workdir, fingerprint, runner, workers,
                       ray_address, progress)
    counts = result.counts
    device = stage.encoder.device if stage.encoder is not None else f"{runner} workers ({options.device or 'auto'})"
    return {"encoder": str(stage.spec), "modality": "text", "text_col": plan.text_col, "uid_scheme": plan.uid_scheme,
            "rows_in": plan.rows, "rows": result.rows[OUTPUT], "parts": len(result.part_rows[OUTPUT]),
            "null_text_dropped": counts.get("null_text_dropped", 0), "null_text": options.null_text,
            "unique_texts": counts.get("unique_texts", 0), "device": device, "runner": runner,
            "shards_resumed": result.resumed, "seconds": round(result.seconds, 3)}
