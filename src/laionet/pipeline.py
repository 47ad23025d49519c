"""The commands behind the CLI: vocab, match, score, filter and build (all four in one).

Each function checks its arguments before doing any work, runs its stage through a runner (so it resumes
shard by shard), and writes a manifest with counts in and out and the reasons rows were dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.io.inputs import Columns, InputPlan, plan_inputs
from laionet.io.manifest import new_manifest, read_manifest, write_manifest
from laionet.io.shards import workdir_beside
from laionet.match.stage import MatchStage, input_column_name
from laionet.presets import Preset, get_preset
from laionet.progress import echo
from laionet.runners import check_runner, run_stage
from laionet.vocab.build import build_vocab, read_vocab, vocab_info, write_vocab

SCORE_SHARD_ROWS = 8192


@dataclass
class RunOptions:
    runner: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    progress: bool = True
    overwrite: bool = False

    def __post_init__(self):
        check_runner(self.runner)


@dataclass
class ScoreOptions:
    encoder: str = "hf-clip:openai/clip-vit-base-patch32"
    query: str = "name_def"
    batch_size: int | None = None  # None: by device (score.encoders.default_batch_size)
    device: str | None = None
    checkpoint: str | None = None
    precision: str = "auto"


@dataclass
class FilterOptions:
    threshold: float | None = None
    top_k: int | None = None


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict = field(default_factory=dict)


def resolve_threshold(threshold: float | None, encoder: str) -> float:
    from laionet.score.encoders import default_threshold, parse_spec

    if threshold is not None:
        return threshold
    value = default_threshold(parse_spec(encoder))
    if value is None:
        raise LaionetError(f"--threshold is required for encoder {encoder!r} (the paper's thresholds are "
                           f"0.82 for hf-clip:openai/clip-vit-base-patch32 and 0.58 for "
                           f"sentence-transformers:all-mpnet-base-v2)")
    return value


def _check_preset(vocab: pa.Table, preset: Preset | None, vocab_path) -> Preset:
    built_with = vocab_info(vocab).get("preset", "paper")
    if preset is not None and preset.name != built_with:
        raise LaionetError(f"{vocab_path}: the vocabulary was built with --preset {built_with}; rebuild it "
                           f"with --preset {preset.name}, or match with --preset {built_with}")
    return get_preset(built_with)


def _plan_fingerprint(plan: InputPlan) -> dict:
    return {"files": plan.fingerprints, "text_col": plan.text_col, "id_col": plan.id_col,
            "uid_scheme": plan.uid_scheme, "shards": len(plan.shards)}


# ---- vocab -----------------------------------------------------------------------------------------

def run_vocab(source: str, preset: str, out: Path) -> dict:
    table = build_vocab(source, get_preset(preset))
    write_vocab(table, out)
    return vocab_info(table)


# ---- match -----------------------------------------------------------------------------------------

def run_match(inputs: list[str], vocab_path: Path, out: Path, columns: Columns, preset: str | None = None,
              engine: str = "auto", candidates: Path | None = None, run: RunOptions = RunOptions(),
              shard_rows: int = 1_000_000) -> dict:
    vocab = read_vocab(vocab_path)
    preset_obj = _check_preset(vocab, get_preset(preset) if preset else None, vocab_path)
    plan = plan_inputs(inputs, columns, shard_rows=shard_rows)
    stage = MatchStage(vocab, preset_obj, plan, engine=engine, keep_candidates=candidates is not None)
    stage.setup()  # build the automaton before any shard runs: a bad pattern fails here, once
    outputs = {"matches": out}
    if candidates is not None:
        outputs["candidates"] = candidates
    fingerprint = {"stage": "match", "plan": _plan_fingerprint(plan), "preset": preset_obj.name,
                   "vocab": vocab_info(vocab), "lemmas": len(stage.lemma_to_wnid),
                   "candidates": candidates is not None, "skip_null_text": plan.skip_null_text,
                   "class_counts_per_shard": True}  # older work folders lack them: not resumed
    if run.overwrite:
        from laionet.io.shards import ShardStore

        ShardStore(workdir_beside(out), [], {}).reset()
    result = run_stage(stage, plan, outputs, workdir_beside(out), fingerprint, run.runner, run.workers,
                       run.ray_address, run.progress)
    class_counts = dict(sorted(result.counts.pop("class_counts", {}).items()))
    return {
        "preset": preset_obj.name, "engine": stage.matcher.engine_name, "uid_scheme": plan.uid_scheme,
        "text_col": input_column_name(plan.text_col),
        "nsfw_col": input_column_name(plan.nsfw_col) if plan.nsfw_col else None,
        "inputs": plan.fingerprints, "rows_in": plan.rows, "counts": result.counts,
        "rows_out": result.rows, "shards": result.shards, "shards_resumed": result.resumed,
        "seconds": round(result.seconds, 3), "classes_matched": len(class_counts),
        "class_counts": class_counts,
    }


# ---- score -----------------------------------------------------------------------------------------

def run_score(candidates: list[str], vocab_path: Path, out: Path, options: ScoreOptions, columns: Columns,
              run: RunOptions = RunOptions(), encoder_factory=None) -> dict:
    from laionet.score.stage import ScoreStage

    vocab = read_vocab(vocab_path)
    plan = plan_inputs(candidates, columns, shard_rows=SCORE_SHARD_ROWS)
    if "wnid" not in plan.columns:
        raise LaionetError(f"{plan.files[0]}: no 'wnid' column; score the candidates written by "
                           f"`laionet match --candidates FILE`")
    kwargs = {} if encoder_factory is None else {"encoder_factory": encoder_factory}
    stage = ScoreStage(vocab, options.encoder, plan.text_col, options.query, options.batch_size,
                       options.device, options.checkpoint, options.precision, **kwargs)
    fingerprint = {"stage": "score", "plan": _plan_fingerprint(plan), "options": asdict(options),
                   "vocab": vocab_info(vocab)}
    if run.overwrite:
        from laionet.io.shards import ShardStore

        ShardStore(workdir_beside(out), [], {}).reset()
    result = run_stage(stage, plan, {"scored": out}, workdir_beside(out), fingerprint, run.runner, run.workers,
                       run.ray_address, run.progress)
    return {"encoder": stage.spec.kind + ":" + stage.spec.name, "query": options.query,
            "device": getattr(stage.encoder, "device", None), "rows_in": plan.rows, "counts": result.counts,
            "rows_out": result.rows, "shards": result.shards, "shards_resumed": result.resumed,
            "seconds": round(result.seconds, 3)}


# ---- build -----------------------------------------------------------------------------------------

def run_build(inputs: list[str], out_dir: Path, source: str, preset: str, columns: Columns,
              score: ScoreOptions, filt: FilterOptions, engine: str = "auto", run: RunOptions = RunOptions(),
              shard_rows: int = 1_000_000, encoder_factory=None) -> BuildResult:
    from laionet.score.encoders import check_encoder, pick_device
    from laionet.vocab.templates import QUERY_TEMPLATES

    preset_obj = get_preset(preset)
    check_encoder(score.encoder, score.checkpoint, score.precision)  # fail now, not after matching
    pick_device(score.device)
    if score.query not in QUERY_TEMPLATES:
        raise LaionetError(f"unknown query template {score.query!r}; choose one of: {', '.join(QUERY_TEMPLATES)}")
    threshold = resolve_threshold(filt.threshold, score.encoder)
    params = {"inputs": inputs, "source": source, "preset": preset_obj.name, "columns": asdict(columns),
              "score": asdict(score), "threshold": threshold, "top_k": filt.top_k, "engine": engine,
              "runner": run.runner}
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    previous = read_manifest(manifest_path)
    if previous and not run.overwrite and _comparable(previous["params"]) != _comparable(params):
        raise LaionetError(f"{out_dir}: holds a build with other parameters; use another output folder "
                           f"or pass --overwrite")
    manifest = previous if previous and not run.overwrite else new_manifest("build", params)
    manifest["params"] = params
    manifest["preset"] = preset_obj.to_dict()
    stages = manifest.setdefault("stages", {})

    def done(name: str, *paths: Path) -> bool:
        return stages.get(name, {}).get("done") and all(p.exists() for p in paths) and not run.overwrite

    def record(name: str, info: dict) -> None:
        stages[name] = dict(info, done=True)
        write_manifest(manifest_path, manifest)

    vocab_path = out_dir / "vocab.parquet"
    if not done("vocab", vocab_path):
        record("vocab", run_vocab(source, preset_obj.name, vocab_path))

    matches, candidates = out_dir / "matches.parquet", out_dir / "candidates.parquet"
    if not done("match", matches, candidates):
        info = run_match(inputs, vocab_path, matches, columns, preset_obj.name, engine, candidates, run, shard_rows)
        record("match", info)
    _summary_match(stages["match"])

    scored = out_dir / "scored.parquet"
    if not done("score", scored):
        if pq.ParquetFile(candidates).metadata.num_rows == 0:
            _write_empty_scored(candidates, scored)
            record("score", {"rows_in": 0, "counts": {}, "rows_out": {"scored": 0}})
        else:
            score_columns = Columns(text=stages["match"].get("text_col") or _text_col(candidates, columns),
                                    id="uid", nsfw=columns.nsfw)
            record("score", run_score([str(candidates)], vocab_path, scored, score, score_columns, run,
                                      encoder_factory))

    dataset = out_dir / "laionet.parquet"
    if not done("filter", dataset):
        from laionet.filter import filter_scored  # imports Polars: not at start-up, where `match` pays for it

        nsfw_col = stages["match"].get("nsfw_col")
        result = filter_scored(scored, dataset, threshold, nsfw_col, preset_obj.nsfw_keep, filt.top_k)
        record("filter", {"threshold": threshold, "top_k": filt.top_k, "nsfw_col": nsfw_col,
                          "counts": result.counts, "class_counts": result.class_counts})
    manifest["summary"] = build_summary(stages)
    write_manifest(manifest_path, manifest)
    return BuildResult(out_dir, manifest)


def _comparable(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "runner"}  # both runners give the same output


def _detect(path: Path, names: tuple[str, ...]) -> str | None:
    schema = pq.read_schema(path)
    return next((n for n in names if n in schema.names), None)


def _text_col(path: Path, columns: Columns) -> str:
    from laionet.io.inputs import TEXT_CANDIDATES

    return columns.text or _detect(path, TEXT_CANDIDATES)


def _write_empty_scored(candidates: Path, scored: Path) -> None:
    schema = pq.read_schema(candidates)
    schema = schema.append(pa.field("query", pa.string())).append(pa.field("similarity", pa.float32()))
    pq.write_table(schema.empty_table(), scored)


def build_summary(stages: dict) -> dict:
    match = stages.get("match", {}).get("counts", {})
    filt = stages.get("filter", {}).get("counts", {})
    return {
        "rows_in": match.get("rows_in", 0),
        "null_text": match.get("null_text", 0),
        "rows_matched": match.get("rows_matched", 0),
        "multi_label": match.get("multi_label", 0),
        "single_label": match.get("single_label", 0),
        "nsfw": filt.get("nsfw", 0),
        "below_threshold": filt.get("below_threshold", 0),
        "beyond_top_k": filt.get("beyond_top_k", 0),
        "rows_out": filt.get("rows_out", 0),
        "classes_out": filt.get("classes_out", 0),
    }


def _summary_match(info: dict) -> None:
    counts = info.get("counts", {})
    echo(f"match: {counts.get('rows_in', 0):,} rows, {counts.get('rows_matched', 0):,} matched "
         f"({info.get('classes_matched', 0)} classes), {counts.get('single_label', 0):,} single-label, "
         f"{counts.get('multi_label', 0):,} multi-label dropped")
