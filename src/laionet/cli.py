"""The `laionet` command."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import click

from laionet import __version__
from laionet.cli_common import echo, format_counts, friendly_errors, manifest_beside, option_group
from laionet.presets import DEFAULT_PRESET, PRESETS
from laionet.vocab.sources import SOURCES_HELP
from laionet.vocab.templates import DEFAULT_QUERY, QUERY_TEMPLATES

DEFAULT_ENCODER = "hf-clip:openai/clip-vit-base-patch32"


# Options naming the input columns (auto-detected when not given).
input_columns = option_group(
    click.option("--text-col", help="Caption column (default: TEXT, caption or text)."),
    click.option("--url-col", help="Image URL column (default: URL or url)."),
    click.option("--id-col", help="Integer id column to use as uid (default: LAION part scheme, else row ordinal)."),
    click.option("--nsfw-col", help="NSFW tag column (default: NSFW if present)."),
    click.option("--skip-null-text", is_flag=True, help="Drop rows with a null caption instead of failing."),
)

runner_options = option_group(
    click.option("--runner", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="Where shards run: this machine, or a Ray cluster (Ray Data)."),
    click.option("--ray-address", help="Ray cluster to join (default: start a local one)."),
    click.option("--workers", type=int, help="Parallel shards (default: one per core; one for GPU stages)."),
    click.option("--overwrite", is_flag=True, help="Discard earlier (partial) results instead of resuming."),
    click.option("--no-progress", is_flag=True, help="Hide progress bars."),
)

encoder_options = option_group(
    click.option("--encoder", default=DEFAULT_ENCODER, show_default=True,
                 help="Text encoder spec: hf-clip:NAME, open-clip:ARCH/PRETRAINED, sentence-transformers:NAME "
                      "(a local folder works for NAME)."),
    click.option("--query", type=click.Choice(list(QUERY_TEMPLATES)), default=DEFAULT_QUERY, show_default=True,
                 help="Query template the captions are compared with."),
    click.option("--batch-size", type=int, help="Captions per model batch (default: 64 on a CPU, 256 on a GPU)."),
    click.option("--device", help="cpu, cuda, cuda:1, mps (default: the best available)."),
    click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
                 show_default=True, help="auto: mixed precision on GPU, fp32 on CPU."),
    click.option("--checkpoint", type=click.Path(), help="Local weights for the encoder."),
)


def _columns(kw):
    from laionet.io.inputs import Columns

    return Columns(text=kw["text_col"], url=kw["url_col"], id=kw["id_col"], nsfw=kw["nsfw_col"],
                   skip_null_text=kw["skip_null_text"])


def _run(kw):
    from laionet.pipeline import RunOptions

    return RunOptions(runner=kw["runner"], workers=kw["workers"], ray_address=kw["ray_address"],
                      progress=not kw["no_progress"], overwrite=kw["overwrite"])


def _score(kw):
    from laionet.pipeline import ScoreOptions

    return ScoreOptions(encoder=kw["encoder"], query=kw["query"], batch_size=kw["batch_size"], device=kw["device"],
                        checkpoint=kw["checkpoint"], precision=kw["precision"])


# Commands that live beside their code, each in its own package: imported only when run (or listed by
# --help), so that a short `laionet match` does not load the code of a dozen other commands.
SUBCOMMANDS = {
    "fetch": "laionet.fetch.cli:command",
    "predict": "laionet.predict.cli:command",
    "zeroshot": "laionet.zeroshot.cli:command",
    "ocr": "laionet.ocr.cli:command",
    "evaluate": "laionet.evaluate.cli:command",
    "similarity": "laionet.similarity.cli:command",
    "index": "laionet.index.cli:index_command",
    "search": "laionet.index.cli:search_command",
    "search-dataset": "laionet.index.cli:search_dataset_command",
    "embed": "laionet.embed.cli:command",
    "captions": "laionet.captions.cli:group",
    "compare": "laionet.similarity.compare_cli:command",
    "thresholds": "laionet.thresholds.cli:command",
}


class LazyGroup(click.Group):
    """A click group whose SUBCOMMANDS are imported on first use (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx, name):
        if name in SUBCOMMANDS and name not in self.commands:
            module_name, attr = SUBCOMMANDS[name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if command.name != name:
                raise RuntimeError(f"{SUBCOMMANDS[name]} is the command {command.name!r}, not {name!r}")
            self.add_command(command)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="laionet")
def main():
    """Recreate ImageNet from web image-text data and measure how it differs from ImageNet."""
    from laionet.memory import keep_freed_memory

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    keep_freed_memory()  # batch after batch of same-sized buffers: reuse them (2x for CPU inference)


@main.command()
@click.option("--source", default="imagenet-1k", show_default=True, help=f"Class list: {SOURCES_HELP}.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@friendly_errors
def vocab(source, preset, out):
    """Build the class vocabulary: lemmas, definitions, match lemmas and query texts."""
    from laionet.pipeline import run_vocab

    info = run_vocab(source, preset, out)
    echo(f"vocab: {info['classes']} classes, {info['match_lemmas']} match lemmas over "
          f"{info['matchable_classes']} classes, {info['reachable_classes']} of which can give a "
          f"single-label caption -> {out}")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--vocab", "vocab_path", type=click.Path(path_type=Path), required=True)
@click.option("--preset", type=click.Choice(list(PRESETS)), help="Must be the vocabulary's (default: it is).")
@click.option("--engine", type=click.Choice(["auto", "aho-corasick", "hyperscan"]), default="auto", show_default=True)
@click.option("--candidates", type=click.Path(path_type=Path),
              help="Also write the single-label rows (all input columns + uid, wnid) here, for `laionet score`.")
@click.option("--shard-rows", type=int, default=1_000_000, show_default=True, help="Rows per shard (unit of resume).")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@input_columns
@runner_options
@friendly_errors
def match(inputs, vocab_path, preset, engine, candidates, shard_rows, out, **kw):
    """Match captions against the vocabulary's lemmas: the long table uid, wnid, lemma."""
    from laionet.pipeline import run_match

    info = run_match(list(inputs), vocab_path, out, _columns(kw), preset, engine, candidates, _run(kw), shard_rows)
    manifest_beside(out, "match", {"inputs": list(inputs), "vocab": str(vocab_path)}, info)
    counts = info["counts"]
    rate = info["rows_in"] / info["seconds"] if info["seconds"] else 0
    echo(f"match: {counts.get('rows_in', 0):,} rows, {counts.get('rows_matched', 0):,} matched, "
          f"{counts.get('matches', 0):,} matches over {info['classes_matched']} classes "
          f"[{info['engine']}, {rate:,.0f} rows/s] -> {out}")


@main.command()
@click.argument("candidates", nargs=-1, required=True)
@click.option("--vocab", "vocab_path", type=click.Path(path_type=Path), required=True)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@encoder_options
@input_columns
@runner_options
@friendly_errors
def score(candidates, vocab_path, out, **kw):
    """Cosine similarity of each candidate caption with its class's query text."""
    from laionet.io.inputs import Columns
    from laionet.pipeline import run_score

    columns = _columns(kw)
    columns = Columns(text=columns.text, url=columns.url, id=columns.id or "uid", nsfw=columns.nsfw,
                      skip_null_text=True)
    info = run_score(list(candidates), vocab_path, out, _score(kw), columns, _run(kw))
    manifest_beside(out, "score", {"candidates": list(candidates), "vocab": str(vocab_path)}, info)
    echo(f"score: {info['rows_in']:,} rows with {info['encoder']} on {info['device']} -> {out}")


@main.command(name="filter")
@click.argument("scored", type=click.Path(path_type=Path))
@click.option("--threshold", type=float, help="Keep similarity > threshold (default: the paper's for the encoder).")
@click.option("--encoder", default=DEFAULT_ENCODER, show_default=True, help="Only to pick the default threshold.")
@click.option("--top-k", type=int, help="Keep at most the k most similar rows per class (the paper's skim: 50).")
@click.option("--nsfw-col", default="NSFW", show_default=True)
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@friendly_errors
def filter_command(scored, threshold, encoder, top_k, nsfw_col, preset, out):
    """Drop multi-label, unsafe and low-similarity rows; optionally keep the top k per class."""
    from laionet.filter import filter_scored
    from laionet.pipeline import resolve_threshold
    from laionet.presets import get_preset

    threshold = resolve_threshold(threshold, encoder)
    result = filter_scored(scored, out, threshold, nsfw_col, get_preset(preset).nsfw_keep, top_k)
    manifest_beside(out, "filter", {"scored": str(scored), "threshold": threshold, "top_k": top_k},
                     {"counts": result.counts, "class_counts": result.class_counts})
    echo(format_counts("filter", result.counts) + f" -> {out}")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--source", default="imagenet-1k", show_default=True, help=f"Class list: {SOURCES_HELP}.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True)
@click.option("--engine", type=click.Choice(["auto", "aho-corasick", "hyperscan"]), default="auto", show_default=True)
@click.option("--threshold", type=float, help="Keep similarity > threshold (default: the paper's for the encoder).")
@click.option("--top-k", type=int, help="Keep at most the k most similar rows per class (the paper's skim: 50).")
@click.option("--shard-rows", type=int, default=1_000_000, show_default=True, help="Rows per match shard.")
@encoder_options
@input_columns
@runner_options
@friendly_errors
def build(inputs, out, source, preset, engine, threshold, top_k, shard_rows, **kw):
    """vocab -> match -> score -> filter in one command; OUT/laionet.parquet and OUT/manifest.json."""
    from laionet.pipeline import FilterOptions, run_build

    result = run_build(list(inputs), out, source, preset, _columns(kw), _score(kw), FilterOptions(threshold, top_k),
                       engine, _run(kw), shard_rows)
    echo(format_counts("build", result.manifest["summary"]) + f" -> {out / 'laionet.parquet'}")


@main.command(name="presets")
def presets_command():
    """Show what each preset does."""
    for preset in PRESETS.values():
        click.echo(json.dumps(preset.to_dict()))


@main.command(name="import-release")
@click.argument("laionet_parquet", type=click.Path(path_type=Path))
@click.argument("labels_pkl", type=click.Path(path_type=Path))
@click.option("--similarity-col", help="Text-to-query similarity column to expose as `similarity` "
                                      "(default: the text_to_name_def_wnid_similarity_* column; CLIP if several).")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@friendly_errors
def import_release_command(laionet_parquet, labels_pkl, similarity_col, out):
    """Convert the original release (laionet_v1.parquet + wnid2indices_v1.pkl) to our dataset layout."""
    from laionet.release import import_release

    counts = import_release(laionet_parquet, labels_pkl, out, similarity_col)
    echo(format_counts("import-release", counts) + f" -> {out}")


@main.command(name="export-labels")
@click.argument("dataset_parquet", type=click.Path(path_type=Path))
@click.option("--vocab", "vocab_path", type=click.Path(path_type=Path),
              help="Make every vocabulary wnid a key, even when empty (as the original's 978 keys).")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@friendly_errors
def export_labels_command(dataset_parquet, vocab_path, out):
    """Write the original's label pickle {wnid: [global LAION indices]} for the old notebooks."""
    from laionet.release import export_labels

    wnids = None
    if vocab_path is not None:
        from laionet.vocab.build import read_vocab

        wnids = read_vocab(vocab_path).column("wnid").to_pylist()
    counts = export_labels(dataset_parquet, out, wnids)
    echo(format_counts("export-labels", counts) + f" -> {out}")
