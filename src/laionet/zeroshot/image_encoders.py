"""CLIP image towers named by the same spec strings as the text encoders (`laionet.score.encoders`).

    hf-clip:NAME_OR_PATH                 transformers CLIP: `get_image_features`, i.e. visual_projection of the
                                         vision tower's pooled output (spec §8.1), preprocessed by the
                                         checkpoint's CLIPImageProcessor
    open-clip:ARCH/PRETRAINED            open_clip `encode_image`, preprocessed by its eval transform
    open-clip:ARCH + a checkpoint file   open_clip with local weights (also hf-hub:ORG/REPO, local-dir:PATH)

Rows are float32 with unit L2 norm, in the same space as `load_text_encoder(spec)` embeddings, so a dot
product is CLIP's image-text cosine (logits_per_image / logit_scale). Spec parsing, devices, precision and
checkpoint loading are those of `laionet.score.encoders`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from laionet.errors import LaionetError
from laionet.score.encoders import (
    EncoderSpec,
    _first_line,
    _import,
    _l2_normalise,
    _pretrained_source,
    _to_float32,
    _TorchEncoder,
    check_encoder,
    load_clip_tower,
    open_clip_weights,
    pick_device,
)

IMAGE_KINDS = ("hf-clip", "open-clip")


def check_image_encoder(spec: str | EncoderSpec, checkpoint: str | None = None, precision: str = "auto") -> EncoderSpec:
    """What can be checked without loading: the spec is valid and names a kind with an image tower."""
    spec = check_encoder(spec, checkpoint, precision)
    if spec.kind not in IMAGE_KINDS:
        raise LaionetError(f"'{spec}' has no image tower: use hf-clip[:NAME_OR_PATH] or open-clip:ARCH/PRETRAINED")
    return spec


def load_image_encoder(
    spec: str | EncoderSpec,
    device: str | None = None,
    checkpoint: str | None = None,
    precision: str = "auto",
) -> ImageEncoder:
    """The image tower `spec` names, in eval mode on `device`, with weights from `checkpoint` if given."""
    spec = check_image_encoder(spec, checkpoint, precision)
    encoder_class = {"hf-clip": _HFClipImageEncoder, "open-clip": _OpenClipImageEncoder}[spec.kind]
    checkpoint = str(Path(checkpoint).expanduser()) if checkpoint else None
    return encoder_class(spec, pick_device(device), checkpoint, precision)


class ImageEncoder:
    """`transform(PIL RGB image) -> tensor`; `encode(stacked tensors) -> unit-norm float32 rows`."""

    _autocast = _TorchEncoder._autocast  # same precision rules as the text encoders

    def __init__(self, spec: EncoderSpec, device: str, checkpoint: str | None, precision: str):
        self.spec = spec
        self.device = device
        self.precision = precision
        self.name = spec.label
        with _image_load_errors(spec):
            self._load(checkpoint)
            self.model = self.model.eval().to(device)
            from PIL import Image

            probe = self.transform(Image.new("RGB", (8, 8)))
            self.dim = int(self.encode(probe[None]).shape[1])

    def _load(self, checkpoint: str | None) -> None:
        raise NotImplementedError

    def transform(self, image) -> Any:
        raise NotImplementedError

    def _embed(self, pixels) -> Any:
        raise NotImplementedError

    def encode(self, pixels) -> np.ndarray:
        """Embeddings of a batch of transformed images (a tensor of shape (n, 3, H, W))."""
        import torch

        if len(pixels) == 0:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            out = self._embed(pixels.to(self.device))
        return _l2_normalise(_to_float32(out))

    def encode_images(self, images: list, batch_size: int = 32) -> np.ndarray:
        """Convenience: embed PIL images, in order."""
        import torch

        parts = [self.encode(torch.stack([self.transform(im) for im in images[i : i + batch_size]]))
                 for i in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)


class _HFClipImageEncoder(ImageEncoder):
    """transformers CLIP: `CLIPVisionModelWithProjection(...).image_embeds` == `CLIPModel.get_image_features`."""

    def _load(self, checkpoint: str | None) -> None:
        transformers = _import("transformers", "text")
        model, _ = load_clip_tower(transformers, self.spec, "vision", checkpoint)
        source = _pretrained_source(self.spec)
        self.model = model
        try:
            self.processor = transformers.CLIPImageProcessor.from_pretrained(source)
        except Exception as exc:
            raise LaionetError(f"cannot load image encoder '{self.spec}': no image processor config "
                               f"(preprocessor_config.json): {_first_line(exc)}") from exc

    def transform(self, image) -> Any:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def _embed(self, pixels) -> Any:
        return self.model(pixel_values=pixels).image_embeds


class _OpenClipImageEncoder(ImageEncoder):
    """open_clip: `model.encode_image` after the model's eval preprocessing."""

    def _load(self, checkpoint: str | None) -> None:
        open_clip = _import("open_clip", "clip")
        model_name, pretrained = open_clip_weights(self.spec, checkpoint)
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, pretrained_text=False
        )
        if checkpoint:
            open_clip.load_checkpoint(model, checkpoint)
        self.model = model
        self.preprocess = preprocess

    def transform(self, image) -> Any:
        return self.preprocess(image)

    def _embed(self, pixels) -> Any:
        return self.model.encode_image(pixels)


@contextmanager
def _image_load_errors(spec: EncoderSpec) -> Iterator[None]:
    try:
        yield
    except LaionetError:
        raise
    except Exception as exc:
        raise LaionetError(f"cannot load image encoder '{spec}': {_first_line(exc)}") from exc
