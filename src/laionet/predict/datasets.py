"""Local labelled image datasets as one table: `uid` (int64), `image` (path), `wnid`, `key`.

    folder:DIR         DIR/<wnid>/*.JPEG (any depth below the wnid folder), or flat DIR/<wnid>_anything.JPEG
    imagenet-val:DIR   ILSVRC2012_val_%08d.JPEG files; labels from the devkit ground truth
                       (ILSVRC2012_validation_ground_truth.txt + meta.mat) or a CSV `file,wnid`
    imagenet-v2:DIR    DIR/{cid}/*, cid -> wnid from class_info.json (spec §7.3), else the sorted 1k wnids

`key` is the image's path relative to DIR (the original's index for local sets, spec §6.3, §7.3); uids are
the rows' ordinals in key order, so the same folder always gives the same uids.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pyarrow as pa

from laionet.errors import LaionetError

KINDS = ("folder", "imagenet-val", "imagenet-v2")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SCHEMA = pa.schema([("uid", pa.int64()), ("image", pa.string()), ("wnid", pa.string()), ("key", pa.string())])
WNID = re.compile(r"n\d{8}")
_WNID_PREFIX = re.compile(r"(n\d{8})(?:[_\-. ]|$)")
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.", re.IGNORECASE)
_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"


def is_dataset_spec(text: str) -> bool:
    kind, colon, _ = str(text).partition(":")
    return bool(colon) and kind in KINDS


def load_dataset(spec: str, labels: str | Path | None = None) -> pa.Table:
    """The table for `KIND:DIR`; `labels` is the ground truth file (imagenet-val) or class_info.json (v2)."""
    kind, _, folder = str(spec).partition(":")
    if kind not in KINDS:
        raise LaionetError(f"unknown dataset kind '{kind}': use {', '.join(k + ':DIR' for k in KINDS)}")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise LaionetError(f"dataset folder not found: {folder}")
    if kind == "folder":
        rows = _folder_rows(root)
    elif kind == "imagenet-val":
        rows = _imagenet_val_rows(root, labels)
    else:
        rows = _imagenet_v2_rows(root, labels)
    if not rows:
        raise LaionetError(f"no images found in {folder}")
    rows.sort()
    return pa.table({
        "uid": pa.array(range(len(rows)), pa.int64()),
        "image": [str(root / key) for key, _ in rows],
        "wnid": [wnid for _, wnid in rows],
        "key": [key for key, _ in rows],
    }, schema=SCHEMA)


def _image_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _folder_rows(root: Path) -> list[tuple[str, str]]:
    """The wnid is the nearest enclosing folder named by a wnid, else the start of the file name."""
    rows = []
    for path in _image_files(root):
        parts = path.relative_to(root).parts
        folders = [part for part in parts[:-1] if WNID.fullmatch(part)]
        prefix = _WNID_PREFIX.match(path.name)
        wnid = folders[-1] if folders else prefix.group(1) if prefix else None
        if wnid is None:
            raise LaionetError(f"cannot tell the class of {path}: put it in a folder named by its wnid or start "
                               f"its file name with the wnid (n01440764_....JPEG)")
        rows.append((_key(path, root), wnid))
    return rows


def _imagenet_val_rows(root: Path, labels: str | Path | None) -> list[tuple[str, str]]:
    if labels is None:
        raise LaionetError("imagenet-val needs --labels: the devkit's ILSVRC2012_validation_ground_truth.txt "
                           "(with meta.mat beside it) or a CSV of file,wnid")
    labels = Path(labels).expanduser()
    if not labels.is_file():
        raise LaionetError(f"labels file not found: {labels}")
    by_name = _read_label_csv(labels) if _is_csv(labels) else _read_ground_truth(labels)
    rows = []
    for path in _image_files(root):
        wnid = by_name.get(path.name)
        if wnid is None:
            raise LaionetError(f"{labels} has no label for {path.name}")
        rows.append((_key(path, root), wnid))
    return rows


def _is_csv(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return "," in handle.readline()


def _read_label_csv(path: Path) -> dict[str, str]:
    """file,wnid per line (a header line is allowed); the file may be given with a folder."""
    table = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.reader(handle), 1):
            if len(row) < 2 or (line == 1 and not WNID.fullmatch(row[1].strip())):
                continue  # blank line or header
            if not WNID.fullmatch(row[1].strip()):
                raise LaionetError(f"{path}, line {line}: '{row[1]}' is not a wnid")
            table[Path(row[0].strip()).name] = row[1].strip()
    return table


def _read_ground_truth(path: Path) -> dict[str, str]:
    """Line i holds the ILSVRC2012_ID of ILSVRC2012_val_{i:08d}.JPEG; meta.mat maps ids to wnids (spec §12.1)."""
    id_to_wnid = read_meta_mat(_find_meta(path))
    table = {}
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            table[f"ILSVRC2012_val_{line:08d}.JPEG"] = id_to_wnid[int(text)]
        except (ValueError, KeyError) as exc:
            raise LaionetError(f"{path}, line {line}: '{text.strip()}' is not an ILSVRC2012_ID in meta.mat") from exc
    return table


def _find_meta(ground_truth: Path) -> Path:
    here = ground_truth.parent
    for candidate in (here / "meta.mat", here / "data" / "meta.mat", here.parent / "data" / "meta.mat"):
        if candidate.is_file():
            return candidate
    raise LaionetError(f"meta.mat not found beside {ground_truth} (looked in its folder and data/): the devkit's "
                       f"ground truth holds class ids, and meta.mat maps them to wnids")


def read_meta_mat(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid from the devkit's meta.mat `synsets` struct array."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise LaionetError("reading the devkit's meta.mat needs scipy: pip install scipy") from exc
    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
        return {int(row["ILSVRC2012_ID"]): str(row["WNID"]) for row in synsets.ravel()}
    except Exception as exc:  # a corrupt or foreign .mat file
        raise LaionetError(f"cannot read the synsets of {path}: {exc}") from exc


def _imagenet_v2_rows(root: Path, class_info: str | Path | None) -> list[tuple[str, str]]:
    if class_info is not None and not Path(class_info).expanduser().is_file():
        raise LaionetError(f"class_info.json not found: {class_info}")
    cid_to_wnid = _read_class_info(Path(class_info).expanduser() if class_info else root / "class_info.json")
    rows = []
    for path in _image_files(root):
        parts = path.relative_to(root).parts
        if len(parts) != 2 or parts[0] not in cid_to_wnid:
            raise LaionetError(f"{path} is not in a class folder DIR/{{cid}}/ with cid 0..{len(cid_to_wnid) - 1}")
        rows.append((_key(path, root), cid_to_wnid[parts[0]]))
    return rows


def _read_class_info(path: Path) -> dict[str, str]:
    """cid (as the folder name) -> wnid; without class_info.json cids index the sorted 1k wnids (the same order)."""
    if not path.exists():
        from laionet.vocab.tables import class_list

        return {str(cid): wnid for cid, wnid in enumerate(class_list("imagenet-1k"))}
    try:
        return {str(int(item["cid"])): str(item["wnid"]) for item in json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise LaionetError(f"{path} is not a class_info.json (a list of {{cid, wnid}}): {exc}") from exc
