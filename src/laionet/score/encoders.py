"""Text encoders named by a spec string, as open_clip and clip-retrieval users write them.

    hf-clip:NAME_OR_PATH                 transformers CLIP text tower (default openai/clip-vit-base-patch32)
    open-clip:ARCH/PRETRAINED            open_clip, e.g. open-clip:ViT-B-32/laion2b_s34b_b79k
    open-clip:ARCH + a checkpoint file   open_clip with local weights (also hf-hub:ORG/REPO, local-dir:PATH)
    sentence-transformers:NAME_OR_PATH   SentenceTransformer (default all-mpnet-base-v2)

Every encoder returns float32 rows of unit L2 norm, so a dot product is the cosine similarity the paper
thresholds (CLIP ViT-B/32 at 0.82, all-mpnet-base-v2 at 0.58). torch and the model libraries are imported
inside functions so that importing this module stays cheap for the core.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from laionet.errors import LaionetError

KINDS = ("hf-clip", "open-clip", "sentence-transformers")
DEFAULT_NAMES = {"hf-clip": "openai/clip-vit-base-patch32", "sentence-transformers": "all-mpnet-base-v2"}
EXTRAS = {"hf-clip": "text", "open-clip": "clip", "sentence-transformers": "text"}
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

# The paper's cosine-similarity thresholds, keyed by the spec of the model each was chosen for.
DEFAULT_THRESHOLDS = {
    "hf-clip:openai/clip-vit-base-patch32": 0.82,
    "sentence-transformers:all-mpnet-base-v2": 0.58,
}
# Other specs that load the same weights as a key of DEFAULT_THRESHOLDS.
_SAME_WEIGHTS = {
    "hf-clip:openai/clip-vit-base-patch32": ("open-clip:ViT-B-32/openai", "open-clip:ViT-B-32-quickgelu/openai"),
    "sentence-transformers:all-mpnet-base-v2": ("sentence-transformers:sentence-transformers/all-mpnet-base-v2",),
}
_OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:")


@dataclass(frozen=True)
class EncoderSpec:
    kind: str  # "hf-clip" | "open-clip" | "sentence-transformers"
    name: str  # model name or local path

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """A short stable name for columns and manifests: the model's basename, plus the tag for open_clip."""
        name = self.name.rstrip("/\\")
        if self.kind == "open-clip" and name.startswith(_OPEN_CLIP_SCHEMAS):
            name = name.partition(":")[2]
        elif self.kind == "open-clip" and not _looks_like_path(name):
            arch, _, pretrained = name.partition("/")
            name = f"{arch}-{Path(pretrained).name}" if pretrained else arch
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name)


@runtime_checkable
class TextEncoder(Protocol):
    spec: EncoderSpec
    device: str
    dim: int

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Embed texts in the given order: float32, shape (len(texts), dim), unit-norm rows."""
        ...


def default_batch_size(device: str) -> int:
    """Texts per model batch when none is given. On a CPU big batches are slower, not faster (MiniLM on
    2 cores: 254 captions/s in batches of 64, 146/s in batches of 256); a GPU wants them big."""
    return 64 if str(device).startswith("cpu") else 256


def encode_unique(encoder: TextEncoder, texts: list[str], batch_size: int | None = None) -> tuple[np.ndarray, int]:
    """Unit rows for `texts` in order, each distinct text encoded once, in batches of similar length
    (longest first, so a batch pads little and an out-of-memory shows on the first one); also returns
    the number of distinct texts. Used by score, embed and captions."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    distinct = list(index)
    order = sorted(range(len(distinct)), key=lambda i: len(distinct[i]), reverse=True)
    embeddings = np.empty((len(distinct), encoder.dim), dtype=np.float32)
    if distinct:
        embeddings[order] = encoder.encode([distinct[i] for i in order], batch_size=batch_size)
    return embeddings[inverse], len(distinct)


def parse_spec(spec: str) -> EncoderSpec:
    """Parse `KIND[:NAME]`; the name may be a hub id or a local folder."""
    kind, colon, name = str(spec).strip().partition(":")
    name = name.strip() if colon else DEFAULT_NAMES.get(kind, "")
    if kind not in KINDS or not name:
        problem = "unknown encoder kind" if kind not in KINDS else "no model name in encoder spec"
        raise LaionetError(
            f"{problem} '{spec}': use hf-clip[:NAME], open-clip:ARCH/PRETRAINED or sentence-transformers[:NAME]"
        )
    return EncoderSpec(kind, name)


def default_threshold(spec: EncoderSpec) -> float | None:
    """The paper's threshold when `spec` is the model it was chosen for (or a local copy of it), else None."""
    for reference, threshold in DEFAULT_THRESHOLDS.items():
        ref = parse_spec(reference)
        if str(spec) == reference or str(spec) in _SAME_WEIGHTS.get(reference, ()):
            return threshold
        local_copy = spec.kind == ref.kind and Path(spec.name).expanduser().is_dir()
        if local_copy and Path(spec.name.rstrip("/\\")).name == Path(ref.name).name:
            return threshold
    return None


def pick_device(device: str | None) -> str:
    """None/"auto": the best available accelerator; an explicit device must be available."""
    torch = _import("torch", "text")
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device_type = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise LaionetError(f"unknown device '{device}': {_first_line(exc)}") from exc
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device_type in available and not available[device_type]():
        raise LaionetError(f"device '{device}' was requested but {device_type} is not available on this machine")
    return device


def check_encoder(spec: str | EncoderSpec, checkpoint: str | None = None, precision: str = "auto") -> EncoderSpec:
    """Everything about an encoder request that can be checked without loading it: spec, local folder,
    checkpoint file, precision, installed packages. Commands call it before any work starts."""
    spec = parse_spec(str(spec))  # also validates a hand-built EncoderSpec
    if precision not in PRECISIONS:
        raise LaionetError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    if checkpoint is not None and not Path(checkpoint).expanduser().is_file():
        raise LaionetError(f"checkpoint file not found: {checkpoint}")
    if _looks_like_path(spec.name) and not Path(spec.name).expanduser().is_dir():
        raise LaionetError(f"cannot load text encoder '{spec}': no such folder {spec.name}")
    _import("torch", EXTRAS[spec.kind])  # so a missing torch names this kind's extra
    return spec


def load_text_encoder(
    spec: str | EncoderSpec,
    device: str | None = None,
    checkpoint: str | None = None,
    precision: str = "auto",
) -> TextEncoder:
    """Build the encoder `spec` names, in eval mode on `device`, with weights from `checkpoint` if given."""
    spec = check_encoder(spec, checkpoint, precision)
    encoder_class = {
        "hf-clip": _HFClipEncoder,
        "open-clip": _OpenClipEncoder,
        "sentence-transformers": _SentenceEncoder,
    }[spec.kind]
    checkpoint = str(Path(checkpoint).expanduser()) if checkpoint else None
    return encoder_class(spec, pick_device(device), checkpoint, precision)


class _TorchEncoder:
    """Batching, mixed precision and normalisation shared by all kinds; subclasses load and embed a batch."""

    def __init__(self, spec: EncoderSpec, device: str, checkpoint: str | None, precision: str):
        self.spec = spec
        self.device = device
        self.precision = precision
        with _load_errors(spec):
            self._load(checkpoint)
            # A probe rather than the config: each library names the output size differently.
            self.dim = int(self.encode(["a photo"]).shape[1])

    def _load(self, checkpoint: str | None) -> None:
        raise NotImplementedError

    def _embed(self, texts: list[str]) -> Any:
        """Embeddings of one batch, as a tensor or an array, not yet normalised."""
        raise NotImplementedError

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        import torch

        if batch_size is not None and batch_size < 1:
            raise LaionetError(f"batch size must be at least 1, got {batch_size}")
        batch_size = batch_size or default_batch_size(self.device)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            parts = [_to_float32(self._embed(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return _l2_normalise(np.concatenate(parts))

    def _autocast(self):
        import torch

        device_type = torch.device(self.device).type
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        if self.precision == "auto" and device_type == "cuda":
            dtype = torch.float16  # more mantissa than bf16, and CLIP-style text towers stay in fp16 range
        return torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext()


class _HFClipEncoder(_TorchEncoder):
    """transformers CLIP: the projected EOS-pooled output, i.e. `CLIPModel.get_text_features`."""

    def _load(self, checkpoint: str | None) -> None:
        transformers = _import("transformers", "text")
        model, text_config = load_clip_tower(transformers, self.spec, "text", checkpoint)
        source = _pretrained_source(self.spec)
        self.model = model.eval().to(self.device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        self.max_length = text_config.max_position_embeddings  # 77 for CLIP

    def _embed(self, texts: list[str]) -> Any:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).text_embeds


# The CLIP tower classes of transformers, and the model types a checkpoint of that tower may have.
_CLIP_TOWERS = {
    "text": ("CLIPTextModelWithProjection", "text_config", "clip_text_model"),
    "vision": ("CLIPVisionModelWithProjection", "vision_config", "clip_vision_model"),
}


def load_clip_tower(transformers, spec: EncoderSpec, tower: str, checkpoint: str | None):
    """One tower of a transformers CLIP ("text" or "vision") with its projection, from a full CLIP checkpoint
    or a tower-only one; every weight must load. Returns (model, the tower's config)."""
    class_name, sub_config, tower_type = _CLIP_TOWERS[tower]
    source = _pretrained_source(spec)
    config = transformers.AutoConfig.from_pretrained(source)
    if config.model_type not in ("clip", tower_type):
        raise LaionetError(f"'{spec}' is not a CLIP model (its config says model_type '{config.model_type}')")
    # A tower's own config does not always carry the projection size, so take that from the full config.
    tower_config = getattr(config, sub_config, config)
    tower_config.projection_dim = config.projection_dim
    with _quiet_transformers(transformers):  # the other tower's skipped weights would print a long report
        model, info = getattr(transformers, class_name).from_pretrained(
            source, config=tower_config, output_loading_info=True
        )
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        what = "text encoder" if tower == "text" else "image encoder"
        raise LaionetError(f"cannot load {what} '{spec}': {len(missing)} weights missing, e.g. {missing[0]}")
    if checkpoint:
        _load_state_dict_file([model], checkpoint, spec)
    return model, tower_config


class _OpenClipEncoder(_TorchEncoder):
    """open_clip: `model.encode_text` on its own tokenizer's output."""

    def _load(self, checkpoint: str | None) -> None:
        open_clip = _import("open_clip", "clip")
        model_name, pretrained = open_clip_weights(self.spec, checkpoint)
        # pretrained_hf=False: never fetch a text tower's base weights; the CLIP weights replace them anyway.
        model = open_clip.create_model(model_name, pretrained=pretrained, pretrained_hf=False)
        if checkpoint:
            open_clip.load_checkpoint(model, checkpoint)
        if getattr(model, "visual", None) is not None:
            model.visual = None  # text only: keep the image tower off the device
        self.model = model.eval().to(self.device)
        self.tokenizer = open_clip.get_tokenizer(model_name)

    def _embed(self, texts: list[str]) -> Any:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


class _SentenceEncoder(_TorchEncoder):
    """sentence-transformers: `SentenceTransformer.encode`, whatever pooling the model folder configures."""

    def _load(self, checkpoint: str | None) -> None:
        sentence_transformers = _import("sentence_transformers", "text")
        with no_loading_bar(_import("transformers", "text")):
            model = sentence_transformers.SentenceTransformer(_pretrained_source(self.spec), device=self.device)
        if checkpoint:
            # Either the whole SentenceTransformer's state dict or that of its underlying transformer.
            _load_state_dict_file([model, getattr(model[0], "auto_model", None)], checkpoint, self.spec)
        self.model = model.eval()

    def _embed(self, texts: list[str]) -> Any:
        return self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)


def _pretrained_source(spec: EncoderSpec) -> str:
    """The name for from_pretrained: a local path (which must be a folder) or, otherwise, a hub id."""
    path = Path(spec.name).expanduser()
    if _looks_like_path(spec.name):
        if not path.is_dir():
            raise LaionetError(f"cannot load text encoder '{spec}': no such folder {spec.name}")
        return str(path)
    return spec.name


def open_clip_weights(spec: EncoderSpec, checkpoint: str | None) -> tuple[str, str | None]:
    """open_clip's (model_name, pretrained) for `spec`, refusing a spec whose weights are ambiguous (named
    and given as a checkpoint) or absent (open_clip would silently build random weights)."""
    model_name, pretrained = _open_clip_source(spec)
    if checkpoint and pretrained:
        raise LaionetError(f"'{spec}' names pretrained weights '{pretrained}' and a checkpoint was given too: give one")
    if not (checkpoint or pretrained or model_name.startswith(_OPEN_CLIP_SCHEMAS)):
        raise LaionetError(f"'{spec}' names no weights: use open-clip:ARCH/PRETRAINED or give a checkpoint")
    return model_name, pretrained


def _open_clip_source(spec: EncoderSpec) -> tuple[str, str | None]:
    """open_clip's (model_name, pretrained): a schema name or local folder as is, else ARCH/PRETRAINED."""
    name = spec.name
    if name.startswith(_OPEN_CLIP_SCHEMAS):
        return name, None
    if _looks_like_path(name):
        return "local-dir:" + _pretrained_source(spec), None
    arch, _, pretrained = name.partition("/")
    return arch, pretrained or None


def _looks_like_path(name: str) -> bool:
    path = Path(name).expanduser()
    return name.startswith((".", "~")) or path.is_absolute() or path.exists()


def _load_state_dict_file(modules: list, path: str, spec: EncoderSpec) -> None:
    """Load a state dict file into the first module it covers; extra weights (a vision tower) are ignored."""
    state = _read_state_dict(path, EXTRAS[spec.kind])
    for module in filter(None, modules):
        missing = sorted(set(module.state_dict()) - set(state))
        if not missing:
            module.load_state_dict(state, strict=False)
            return
    raise LaionetError(f"checkpoint {path} does not fit '{spec}': {len(missing)} weights missing, e.g. {missing[0]}")


def _read_state_dict(path: str, extra: str) -> dict:
    if path.endswith(".safetensors"):
        state = _import("safetensors.torch", extra).load_file(path)
    else:
        state = _import("torch", extra).load(path, map_location="cpu", weights_only=True)
    # Training scripts often wrap the weights and prefix them with DataParallel's "module.".
    state = state.get("state_dict", state)
    return {key.removeprefix("module."): value for key, value in state.items()}


def _to_float32(embeddings: Any) -> np.ndarray:
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().float().cpu().numpy()
    return np.asarray(embeddings, dtype=np.float32)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))  # an all-zero row stays zero instead of NaN


def _import(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is needed for text encoders: pip install 'laionet[{extra}]' ({_first_line(exc)})"
        raise LaionetError(message) from exc


@contextmanager
def _load_errors(spec: EncoderSpec) -> Iterator[None]:
    """Turn a library's failure to find or build the model into a one-line LaionetError."""
    try:
        yield
    except LaionetError:
        raise
    except Exception as exc:
        raise LaionetError(f"cannot load text encoder '{spec}': {_first_line(exc)}") from exc


@contextmanager
def _quiet_transformers(transformers) -> Iterator[None]:
    """No warnings (the caller reports what matters in one line) and no loading bar."""
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with no_loading_bar(transformers):
            yield
    finally:
        transformers.logging.set_verbosity(previous)


@contextmanager
def no_loading_bar(transformers) -> Iterator[None]:
    """No "Loading weights" bar from transformers: a model load takes a second, and its bar would cut
    through laionet's own progress line. Downloads keep huggingface_hub's bars."""
    utils_logging = transformers.utils.logging
    enabled = utils_logging.is_progress_bar_enabled()
    utils_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            utils_logging.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
