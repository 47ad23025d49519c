"""Presets: named bundles of the choices where the original system had quirks.

`paper` reproduces the original exactly (reference spec §1.3, §4, §11). `clean` fixes the quirks:
case folding, punctuation normalised on both sides, nested lemmas resolved to the longest match, and the
wrong Siberian-husky wnid of the original class file mapped to the real ILSVRC one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from laionet.errors import LaionetError


@dataclass(frozen=True)
class Preset:
    name: str
    # Matching (spec §1.3, §11.1-3).
    case_fold: bool
    normalize_lemmas: bool  # apply the caption normalisation to lemmas too
    unicode_punctuation: bool  # treat all Unicode punctuation/symbols (not only ASCII) as separators
    longest_match: bool  # nested lemmas resolve to the longest (leftmost-longest, non-overlapping)
    # Vocabulary (spec §1.1, §11.5).
    harmonize_wnids: bool  # map the original file's n02112837 to the ILSVRC wnid n02110185
    # Filtering (spec §4.1): rows whose NSFW tag is not one of these are dropped.
    nsfw_keep: tuple[str, ...] = ("UNLIKELY",)
    # Images (spec §5.1, §11.7): the paper rejected non-RGB images instead of converting them.
    convert_non_rgb: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


PAPER = Preset(
    name="paper",
    case_fold=False,
    normalize_lemmas=False,
    unicode_punctuation=False,
    longest_match=False,
    harmonize_wnids=False,
    convert_non_rgb=False,
)

CLEAN = Preset(
    name="clean",
    case_fold=True,
    normalize_lemmas=True,
    unicode_punctuation=True,
    longest_match=True,
    harmonize_wnids=True,
)

PRESETS = {p.name: p for p in (PAPER, CLEAN)}
DEFAULT_PRESET = "paper"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise LaionetError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
