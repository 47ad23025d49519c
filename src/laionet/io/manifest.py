"""The manifest: what a command did, with what, on what, and what it kept and dropped (JSON)."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from laionet import __version__
from laionet.io.atomic import write_text_atomic

# distribution name -> its top-level module
PACKAGES = {"pyarrow": "pyarrow", "polars": "polars", "numpy": "numpy", "ahocorasick-rs": "ahocorasick_rs",
            "hyperscan": "hyperscan", "torch": "torch", "transformers": "transformers",
            "sentence-transformers": "sentence_transformers", "open_clip_torch": "open_clip", "timm": "timm",
            "ray": "ray"}


def package_versions() -> dict[str, str]:
    """Versions of the packages that could shape a result: those this process loaded, read from the loaded
    module where it says (no metadata scan: 25 ms of a one-second `laionet match`). A Ray run's workers
    load what the driver may not, so with Ray loaded every installed one is listed."""
    versions = {"laionet": __version__, "python": platform.python_version()}
    everything = "ray" in sys.modules
    for name, module_name in PACKAGES.items():
        module = sys.modules.get(module_name)
        version = getattr(module, "__version__", None)
        if isinstance(version, str):
            versions[name] = version
        elif module is not None or everything:
            version = _installed_version(name)
            if version:
                versions[name] = version
    return versions


def _installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


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
