"""`laionet captions`: ImageNet-Captions import, caption-to-synset similarities and their plots (§9.1–9.2)."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors
from laionet.presets import DEFAULT_PRESET, PRESETS
from laionet.vocab.templates import DEFAULT_QUERY, QUERY_TEMPLATES

DEFAULT_ENCODER = "hf-clip:openai/clip-vit-base-patch32"


@click.group(name="captions")
def group():
    """ImageNet-Captions: import the captions, compare them with every class query, plot."""


@group.command(name="import")
@click.argument("captions_json", type=click.Path(path_type=Path))
@click.option("--images", type=click.Path(path_type=Path),
              help="ImageNet training images (DIR/wnid/filename or DIR/filename): adds the `image` column.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output parquet.")
@friendly_errors
def import_command(captions_json, images, out):
    """imagenet_captions.json -> one row per image: uid, filename, wnid, TEXT (title tags description)[, image]."""
    import pyarrow.parquet as pq

    from laionet.captions.ingest import import_captions
    from laionet.cli_common import manifest_beside
    from laionet.io.atomic import atomic_path

    table, stats = import_captions(captions_json, images)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    manifest_beside(out, "captions import", {"captions_json": str(captions_json), "images": str(images or "")},
                    stats)
    text = (f"captions import: {stats['entries']:,} entries, {stats['duplicates_dropped']:,} duplicate filenames "
            f"dropped, {stats['rows_out']:,} rows over {stats['classes']:,} classes")
    if images is not None:
        text += f", {stats['images_found']:,} images found, {stats['images_missing']:,} missing"
    echo(text + f" -> {out}")


@group.command(name="synsets")
@click.argument("captions", type=click.Path(path_type=Path))
@click.option("--vocab", "vocab_path", type=click.Path(path_type=Path), required=True)
@click.option("--encoder", default=DEFAULT_ENCODER, show_default=True,
              help="Text encoder: hf-clip:NAME, open-clip:ARCH/PRETRAINED, sentence-transformers:NAME (or a folder).")
@click.option("--query", type=click.Choice(list(QUERY_TEMPLATES)), default=DEFAULT_QUERY, show_default=True)
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="paper: p counts the true class in its denominator, classes outside the vocabulary get p = 0; "
                   "clean: false classes only, and a null p.")
@click.option("--text-col", default="TEXT", show_default=True)
@click.option("--all-similarities", type=click.Path(), help="Also save the full float16 caption × class matrix (.npy).")
@click.option("--batch-size", type=int, help="Captions per model batch (default: 64 on a CPU, 256 on a GPU).")
@click.option("--chunk-rows", type=int, default=10_000, show_default=True, help="Captions per resumable chunk.")
@click.option("--device", help="cpu, cuda, cuda:1, mps (default: the best available).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto", show_default=True)
@click.option("--checkpoint", type=click.Path(), help="Local weights for the encoder.")
@click.option("--overwrite", is_flag=True, help="Discard a partial earlier run instead of resuming.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@friendly_errors
def synsets_command(captions, vocab_path, encoder, query, preset, text_col, all_similarities, batch_size, chunk_rows,
                    device, precision, checkpoint, overwrite, no_progress, out):
    """Similarity of each caption to its own class query and rank among all classes -> OUT/synsets.parquet."""
    from laionet.captions.synsets import MANIFEST, SynsetsOptions, synsets_captions
    from laionet.io.manifest import new_manifest, write_manifest

    options = SynsetsOptions(encoder=encoder, checkpoint=checkpoint, query=query, rule=preset, text_col=text_col,
                             batch_size=batch_size, device=device, precision=precision, chunk_rows=chunk_rows,
                             all_similarities=all_similarities, progress=not no_progress, overwrite=overwrite)
    info = synsets_captions(captions, vocab_path, out, options)
    params = {"captions": str(captions), "vocab": str(vocab_path), "encoder": encoder, "query": query,
              "preset": preset, "text_col": text_col, "all_similarities": all_similarities,
              "batch_size": batch_size, "chunk_rows": chunk_rows, "precision": precision, "checkpoint": checkpoint}
    manifest = new_manifest("captions synsets", params)
    manifest["stages"]["synsets"] = info
    write_manifest(Path(out) / MANIFEST, manifest)
    share = info["share_p_below_0_05"]
    echo(f"captions synsets: {info['rows']:,} captions, {info['in_vocab']:,} in the vocabulary "
         f"({info['classes']:,} classes), {info['p_null']:,} null p, mean p "
         f"{info['mean_p'] if info['mean_p'] is None else format(info['mean_p'], '.4f')}, "
         f"{'n/a' if share is None else format(share, '.1%')} below 0.05 -> {out}")


@group.command(name="plot")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--marker", type=float, default=0.05, show_default=True, help="Where the CDF of p gets its marker.")
@click.option("--bins", type=int, default=50, show_default=True, help="Bins of text-to-synset similarity.")
@click.option("--low-quantile", type=float, default=0.1, show_default=True,
              help="Low-similarity captions: this bottom share by similarity (in the vocabulary).")
@friendly_errors
def plot_command(folder, marker, bins, low_quantile):
    """Figures and summary.json from FOLDER/synsets.parquet (written by `laionet captions synsets`)."""
    from laionet.captions.plot import plot_folder

    summary = plot_folder(folder, marker, bins, low_quantile)
    share = summary["share_below_marker"]
    low = summary["low_similarity"]
    more = low["mean_more_similar_classes"]
    echo(f"captions plot: {summary['rows_with_p']:,} captions with p, "
         f"{'n/a' if share is None else format(share, '.1%')} below {marker:g}, "
         f"{summary['captions_above_marker']:,} above; low-similarity captions ({low['captions']:,}): "
         f"{'n/a' if more is None else format(more, '.1f')} more similar classes on average -> {folder}")
