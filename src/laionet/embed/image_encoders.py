"""Image embedders for `laionet embed --modality image`, one dispatch for four kinds of spec.

    timm:NAME               pooled pre-logits features of a timm classifier (no head), as `laionet similarity`
    hf-clip:NAME_OR_PATH    CLIP image embeddings (`laionet.zeroshot.image_encoders`)
    open-clip:ARCH/PRETRAINED
    hf:NAME_OR_PATH         a transformers backbone (ViT, BEiT, ConvNeXt, ...) through AutoModel

For `hf:`, the embedding is the model's `pooler_output` only when the pooler's weights came from the
checkpoint. A classification checkpoint of ViT has no pooler, so AutoModel would build a randomly
initialised dense+tanh one: the original's "vit" numbers probably came from such a random projection
(spec §11.22). Then the CLS token of `last_hidden_state` is used (or, for a convolutional map, its spatial
mean), and missing weights are reported as a warning with their count and an example.

Every embedder has `transform(PIL RGB image) -> tensor`, `encode(stacked tensors) -> unit-norm float32
rows`, `device`, `name` and `dim`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from laionet.errors import LaionetError
from laionet.zeroshot.image_encoders import ImageEncoder

KINDS = ("timm", "hf", "hf-clip", "open-clip")


class MissingWeightsWarning(UserWarning):
    """A checkpoint did not hold every weight of the model that was built from it."""


def embedder_kind(spec: str) -> str:
    kind, colon, name = str(spec).strip().partition(":")
    if kind not in KINDS or not colon or not name.strip():
        raise LaionetError(f"bad image encoder '{spec}': use timm:NAME, hf:NAME_OR_PATH, hf-clip:NAME_OR_PATH "
                           f"or open-clip:ARCH/PRETRAINED")
    return kind


def check_image_embedder(spec: str, checkpoint: str | None = None, precision: str = "auto") -> str:
    """What can be checked without loading; returns the kind."""
    kind = embedder_kind(spec)
    if kind in ("timm", "hf"):
        from laionet.predict.models import check_classifier

        check_classifier(spec, checkpoint, precision)  # same spec grammar, files and packages
    else:
        from laionet.zeroshot.image_encoders import check_image_encoder

        check_image_encoder(spec, checkpoint, precision)
    return kind


def load_image_embedder(spec: str, device: str | None = None, checkpoint: str | None = None,
                        precision: str = "auto"):
    """The embedder `spec` names, in eval mode on `device`, with weights from `checkpoint` if given."""
    kind = check_image_embedder(spec, checkpoint, precision)
    if kind == "timm":
        from laionet.predict.models import load_classifier

        return _with_dim(TimmFeatures(load_classifier(spec, device, checkpoint, precision)))
    if kind == "hf":
        from laionet.score.encoders import EncoderSpec, pick_device

        name = str(spec).strip().partition(":")[2].strip()
        checkpoint = str(Path(checkpoint).expanduser()) if checkpoint else None
        return HFBackbone(EncoderSpec("hf", name), pick_device(device), checkpoint, precision)
    from laionet.zeroshot.image_encoders import load_image_encoder

    return load_image_encoder(spec, device, checkpoint, precision)


def _with_dim(embedder):
    from PIL import Image

    embedder.dim = int(embedder.encode(embedder.transform(Image.new("RGB", (8, 8)))[None]).shape[1])
    return embedder


class TimmFeatures:
    """Pooled pre-logits features of a timm classifier, `forward_head(forward_features(x), pre_logits=True)`:
    the classifier head is not applied. Weights as in `laionet predict` (pretrained, or a checkpoint)."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.transform = classifier.transform
        self.device = classifier.device
        self.name = classifier.name

    def encode(self, pixels) -> np.ndarray:
        import torch

        from laionet.predict.models import _autocast

        model = self.classifier.model
        with torch.inference_mode(), _autocast(self.device, self.classifier.precision):
            features = model.forward_head(model.forward_features(pixels.to(self.device)), pre_logits=True)
        return l2_normalise(features.float().cpu().numpy())


class HFBackbone(ImageEncoder):
    """transformers AutoModel + AutoImageProcessor; the pooled output only when its weights were loaded."""

    pooling: str | None  # "pooler", "cls" or "mean": how a row is made from the model's output

    def _load(self, checkpoint: str | None) -> None:
        from laionet.predict.models import read_state_dict
        from laionet.score.encoders import _import, _pretrained_source, _quiet_transformers

        transformers = _import("transformers", "text")
        source = _pretrained_source(self.spec)
        with _quiet_transformers(transformers):  # we report missing weights ourselves, in one line
            model, info = transformers.AutoModel.from_pretrained(source, output_loading_info=True)
        missing = set(info["missing_keys"])
        if checkpoint:
            missing = _load_checkpoint(model, read_state_dict(checkpoint))
        self.model = model
        self.processor = transformers.AutoImageProcessor.from_pretrained(source)
        # ConvNeXt's pooled output (a loaded layernorm of the spatial mean) and BEiT's (mean-pooled) are
        # fine; a pooler with missing weights would be random. None: decided by the output's shape.
        pooler_missing = any("pooler" in key.split(".") for key in missing)
        self.pooling = None if pooler_missing else "pooler"
        if missing:
            example = sorted(missing)[0]
            consequence = "; that pooler would be random, so it is not used" if pooler_missing else ""
            warnings.warn(f"'{self.spec}': {len(missing)} weights missing from the checkpoint, e.g. {example}"
                          f"{consequence}", MissingWeightsWarning, stacklevel=2)

    def transform(self, image) -> Any:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def _embed(self, pixels) -> Any:
        output = self.model(pixel_values=pixels)
        if self.pooling == "pooler" and getattr(output, "pooler_output", None) is not None:
            return output.pooler_output.flatten(1)  # conv poolers keep 1x1 spatial dims (ResNet)
        hidden = output.last_hidden_state
        if hidden.dim() == 3:  # tokens (n, seq, hidden): the CLS token
            self.pooling = "cls"
            return hidden[:, 0]
        self.pooling = "mean"  # a feature map (n, C, H, W): its spatial mean
        return hidden.flatten(2).mean(-1)


def _load_checkpoint(model, state: dict) -> set[str]:
    """Load a state dict of the backbone or of its classification model (keys prefixed by the base model's
    name); returns the backbone's weights it did not hold."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    if prefix != "." and any(key.startswith(prefix) for key in state):
        state = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
    result = model.load_state_dict(state, strict=False)
    return set(result.missing_keys)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))
