"""`laionet index`, `laionet search` and `laionet search-dataset` (see build.py, search.py, dataset.py)."""

from __future__ import annotations

from pathlib import Path

import click

from laionet.cli_common import echo, friendly_errors, manifest_beside
from laionet.index.choose import KINDS


@click.command(name="index")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="Index folder.")
@click.option("--encoder", help="Embed INPUTS first with this encoder (as `laionet embed`), into OUT/embeddings.")
@click.option("--modality", type=click.Choice(["text", "image"]), default="text", show_default=True,
              help="With --encoder: what to embed (captions, or the images of one dataset).")
@click.option("--text-col", help="With --encoder, text: caption column (default: TEXT, caption or text).")
@click.option("--id-col", help="With --encoder, text: integer id column to use as uid.")
@click.option("--device", help="With --encoder: cpu, cuda, mps (default: the best available).")
@click.option("--max-memory", default="4GB", show_default=True,
              help="Memory the index may use when searched (picks exact, IVF-PQ with refine, or IVF-PQ).")
@click.option("--kind", type=click.Choice(list(KINDS)), default="auto", show_default=True)
@click.option("--factory", help='A faiss factory string used as given, e.g. "OPQ64,IVF4096,PQ64".')
@click.option("--train-size", type=int, help="Vectors sampled to train the index (default: 64 per IVF list).")
@click.option("--nprobe", type=int, help="Default nprobe recorded for search (default: nlist/64, at least 32).")
@click.option("--seed", type=int, default=0, show_default=True, help="Training sample and k-means seed.")
@click.option("--runner", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: sub-indexes built in Ray tasks, merged in part order.")
@click.option("--ray-address", help="Ray cluster to join (default: start a local one).")
@click.option("--parts-per-task", type=int, default=1, show_default=True, help="ray: parts per sub-index.")
@click.option("--checkpoint-every", "checkpoint_seconds", type=float, default=60.0, show_default=True,
              help="Save the growing index (to resume after a crash) at most every this many seconds; 0: after "
                   "every part.")
@click.option("--overwrite", is_flag=True, help="Discard an earlier (partial) index in OUT.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@friendly_errors
def index_command(inputs, out, encoder, modality, text_col, id_col, device, max_memory, kind, factory, train_size,
                  nprobe, seed, runner, ray_address, parts_per_task, checkpoint_seconds, overwrite, no_progress):
    """Build a faiss inner-product index (resumable) over an embedding folder, or, with --encoder, over
    caption parquets (or an image dataset) embedded first into OUT/embeddings."""
    from laionet.index.build import IndexOptions, build_index
    from laionet.index.choose import format_bytes

    embeddings = _embeddings_for_index(inputs, out, encoder, modality, text_col, id_col, device, runner,
                                       ray_address, overwrite, not no_progress)

    options = IndexOptions(max_memory=max_memory, kind=kind, factory=factory, train_size=train_size, nprobe=nprobe,
                           seed=seed, overwrite=overwrite, progress=not no_progress, runner=runner,
                           ray_address=ray_address, parts_per_task=parts_per_task,
                           checkpoint_seconds=checkpoint_seconds)
    info = build_index(embeddings, out, options)
    done = "already built, nothing to do" if info.get("already_built") else f"{info['seconds']:.1f}s"
    echo(f"index: {info['rows']:,} vectors of dim {info['dim']}, {info['factory']} "
         f"(~{format_bytes(info['expected_bytes'])}, budget {info['max_memory_text']}), "
         f"{_nprobe(info)}{info['normalised_rows']:,} rows normalised, {done} -> {out}")


def _embeddings_for_index(inputs, out: Path, encoder, modality, text_col, id_col, device, runner, ray_address,
                          overwrite: bool, progress: bool) -> str:
    """The embedding folder to index: INPUT itself, or OUT/embeddings made from INPUTS with --encoder (a
    finished one with the same parameters is reused, an interrupted one resumes)."""
    from laionet.errors import LaionetError
    from laionet.index.search import is_embedding_input

    if not encoder:
        path = Path(inputs[0]).expanduser()
        if len(inputs) != 1 or path.exists() and not is_embedding_input(path):
            raise LaionetError(f"{' '.join(inputs)}: not an embedding folder; to index captions or images, "
                               f"give --encoder (they are embedded into {out / 'embeddings'} first)")
        return inputs[0]
    from laionet.embed.cli import embed_to_folder, summary_line
    from laionet.io.manifest import read_manifest

    folder = out / "embeddings"
    params = {"inputs": list(inputs), "encoder": encoder, "modality": modality, "text_col": text_col,
              "id_col": id_col, "runner": runner}
    finished = read_manifest(folder / "manifest.json")
    if finished and not overwrite:
        recorded = {key: finished.get("params", {}).get(key) for key in params}
        if recorded == params:
            return str(folder)
        raise LaionetError(f"{folder}: holds embeddings made with other inputs or parameters; "
                           f"rerun with --overwrite, or choose another folder")
    (folder / "manifest.json").unlink(missing_ok=True)  # set again when this embed finishes
    info = embed_to_folder(params, folder, device=device, ray_address=ray_address, overwrite=overwrite,
                           progress=progress)
    echo(summary_line(info, folder))
    return str(folder)


@click.command(name="search")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("queries")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours per query.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="results.parquet")
@click.option("--nprobe", type=int, help="IVF lists probed (default: the index's, chosen for recall).")
@click.option("--k-factor", type=int, help="Refine indexes: candidates reranked per result (default 64).")
@click.option("--exact", is_flag=True, help="Flat scan of the collection's embeddings instead of the index.")
@click.option("--batch-size", type=int, default=4096, show_default=True, help="Queries per search call.")
@click.option("--text-col", default="TEXT", show_default=True, help="Caption column when QUERIES is captions.")
@click.option("--encoder", help="Text encoder for caption queries (default: the index's).")
@click.option("--device", help="Encoder device: cpu, cuda, mps (default: the best available).")
@click.option("--chunk-rows", type=int, default=10_000, show_default=True,
              help="Caption queries per resumable chunk (a query folder resumes part by part).")
@click.option("--overwrite", is_flag=True, help="Discard the partial results of an interrupted search.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@friendly_errors
def search_command(index_dir, queries, k, out, nprobe, k_factor, exact, batch_size, text_col, encoder, device,
                   chunk_rows, overwrite, no_progress):
    """Nearest collection rows of each query: query_uid, uid, score, rank (resumable: a rerun skips the
    query chunks already searched)."""
    from laionet.index.search import SearchOptions, search_index

    options = SearchOptions(k=k, nprobe=nprobe, k_factor=k_factor, exact=exact, batch_size=batch_size,
                            text_col=text_col, encoder=encoder, device=device, chunk_rows=chunk_rows,
                            overwrite=overwrite, progress=not no_progress)
    info = search_index(index_dir, queries, out, options)
    manifest_beside(out, "search", {"index": str(index_dir), "queries": queries, "k": k}, info)
    how = "exact scan" if exact else f"{info['factory']}, {_nprobe(info)}".rstrip(", ")
    resumed = f", {info['chunks_resumed']} of {info['chunks']} chunks resumed" if info["chunks_resumed"] else ""
    echo(f"search: {info['query_rows']:,} queries, {info['hits']:,} hits (k {k}, {how}, "
         f"{info['queries_per_second'] or 0:,.0f} queries/s{resumed}) -> {out}")


def _nprobe(info: dict) -> str:
    """"nprobe N, " for IVF indexes; nothing for those without lists (Flat, HNSW)."""
    return f"nprobe {info['nprobe']}, " if info.get("nprobe") else ""


@click.command(name="search-dataset")
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--queries", "queries", multiple=True, required=True, help="The query captions with their labels.")
@click.option("--query-label-col", default="wnid", show_default=True)
@click.option("--query-text-col", help="Caption column of the queries (to find them as search did).")
@click.option("--collection", multiple=True, required=True, help="The collection parquet(s) the index covers.")
@click.option("--collection-text-col", help="Caption column of the collection (default: detected).")
@click.option("--min-score", type=float, help="Keep hits with score > this (the paper: 0.7).")
@click.option("--top", type=int, default=1, show_default=True, help="Use the best TOP hits of each query.")
@click.option("--multi-label", type=click.Choice(["keep", "best", "drop"]), default="keep", show_default=True,
              help="A row found for several labels: one row per label, its best label, or left out.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="dataset.parquet")
@friendly_errors
def search_dataset_command(results, queries, query_label_col, query_text_col, collection, collection_text_col,
                           min_score, top, multi_label, out):
    """Label each found collection row with its query's label: a dataset for `laionet similarity`."""
    from laionet.cli_common import format_counts
    from laionet.index.dataset import search_dataset

    info = search_dataset(str(results), list(queries), list(collection), out, query_label_col, top, min_score,
                          multi_label, query_text_col, collection_text_col)
    manifest_beside(out, "search-dataset", {"results": str(results), "queries": list(queries),
                                            "collection": list(collection)}, info)
    echo(format_counts("search-dataset", info) + f" -> {out}")
