"""The manifest: what a command did, with what, on what, and what it kept and dropped (JSON)."""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from laionet import __version__
from laionet.io.atomic import write_text_atomic

PACKAGES = ("pyarrow", "polars", "numpy", "ahocorasick-rs", "hyperscan", "torch", "transformers",
            "sentence-transformers", "open_clip_torch", "timm", "ray")


def package_versions() -> dict[str, str]:
    versions = {"laionet": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def new_manifest(command: str, params: dict) -> dict:
    return {
        "command": command,
        "argv": sys.argv[1:],
        "params": params,
        "versions": package_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stages": {},
    }


def write_manifest(path: str | Path, manifest: dict) -> None:
    manifest = dict(manifest, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_text_atomic(path, json.dumps(manifest, indent=2, default=str) + "\n")


def read_manifest(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
