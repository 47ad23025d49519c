"""`laionet predict --runner ray` writes the same predictions as the local runner, failed images included.

Ray starts once for the module (a few seconds); the runner joins that instance instead of its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from laionet.predict.cli import command  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared/data/imagenet_samples"

pytestmark = [
    pytest.mark.usefixtures("ray_cluster"),
    pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared sample images not available"),
]




@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for path in sorted(SAMPLES.glob("*.JPEG"))[:12]:
        shutil.copy(path, folder / path.name)
    (folder / "n01440764_corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _predict(folder: Path, model: Path, out: Path, runner: str) -> Path:
    result = CliRunner().invoke(command, [f"folder:{folder}", "--model", f"hf:{model}", "--runner", runner,
                                          "--batch-size", "4", "--chunk-rows", "5", "--no-progress", "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_ray_runner_equals_local(folder, tiny_vit, tmp_path):
    """13 rows in chunks of 5: the Ray pipeline runs over all three chunks at once and writes each."""
    local = pq.read_table(_predict(folder, tiny_vit, tmp_path / "local.parquet", "local"))
    remote = pq.read_table(_predict(folder, tiny_vit, tmp_path / "ray.parquet", "ray"))
    assert local.num_rows == 13
    assert remote.equals(local)
    for table in (local, remote):
        failed = [row for row in table.to_pylist() if row["status"] != "ok"]
        assert len(failed) == 1 and failed[0]["top5"] is None and failed[0]["error"]
        assert sum(row["status"] == "ok" for row in table.to_pylist()) == 12
    assert not (tmp_path / ".ray.parquet.work").exists()  # the work folder is gone


def test_ray_runner_in_windows_equals_local(folder, tiny_vit, tmp_path, monkeypatch):
    """Chunks of 5, 5 and 3 rows in windows of at most 8 rows: two pipelines, the same file."""
    from laionet.predict import ray_run

    assert ray_run._windows([5, 5, 3], 8) == [[0], [1, 2]]
    assert ray_run._windows([5, 5, 3], 5) == [[0], [1], [2]]
    assert ray_run._windows([5, 5, 3], 10) == [[0, 1], [2]]
    assert ray_run._windows([20, 1], 8) == [[0], [1]]  # a chunk bigger than a window is a window
    monkeypatch.setattr(ray_run, "WINDOW_ROWS", 8)
    local = pq.read_table(_predict(folder, tiny_vit, tmp_path / "local.parquet", "local"))
    remote = pq.read_table(_predict(folder, tiny_vit, tmp_path / "ray.parquet", "ray"))
    assert remote.equals(local) and local.num_rows == 13
