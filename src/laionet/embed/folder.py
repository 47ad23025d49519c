"""The output folder of `laionet embed`: where its work folder is, what may be overwritten, its manifest."""

from __future__ import annotations

from pathlib import Path

from laionet.embed.store import PART_GLOB, open_embeddings
from laionet.errors import LaionetError

FAILURES = "failures.parquet"
MANIFEST = "manifest.json"


def prepare_output(out: Path, workdir: Path, overwrite: bool) -> None:
    """Refuse to mix a new run into a finished one; with `overwrite`, clear what an earlier run left.
    An existing work folder means an interrupted run: it resumes, parts already published included."""
    if out.exists() and not out.is_dir():
        raise LaionetError(f"{out}: exists and is not a folder; `laionet embed -o` names a folder of parts")
    old = sorted(out.glob(PART_GLOB)) if out.is_dir() else []
    if old and overwrite:
        for path in old + [out / FAILURES, out / MANIFEST]:
            path.unlink(missing_ok=True)
    elif old and not workdir.exists():
        raise LaionetError(f"{out}: already holds {len(old)} embedding part(s); rerun with --overwrite "
                           f"to replace them, or choose another folder")


def folder_info(out: Path, dtype: str) -> dict:
    """dim and per-part rows read back from the parts written (also right for a resumed run)."""
    if not any(out.glob(PART_GLOB)):
        return {"dim": None, "dtype": dtype, "normalized": True, "part_rows": []}
    embeddings = open_embeddings(out)
    return {"dim": embeddings.dim, "dtype": embeddings.dtype, "normalized": True, "part_rows": embeddings.part_rows}


def write_embed_manifest(out: Path, params: dict, info: dict) -> None:
    from laionet.io.manifest import new_manifest, write_manifest

    manifest = new_manifest("embed", params)
    manifest["stages"]["embed"] = info
    write_manifest(out / MANIFEST, manifest)
