"""The OCR flag rule of the original (`evaluate_recognized_texts.py`, spec §4.3): an exact phrase match.

A class is "in" the recognised text when its name, with every `string.punctuation` character turned into a
space and padded with a space on each side, is a substring of the recognised text treated the same way and
lowercased. There is no similarity threshold. A missing text (None) is never a match.
"""

from __future__ import annotations

import string

_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))


def _padded(text: str) -> str:
    return f" {text.translate(_PUNCTUATION)} "


def name_in_text(name: str, text: str | None) -> bool:
    """True when the padded, punctuation-stripped `name` occurs in the padded, punctuation-stripped, lowercased
    `text`. The name is lowercased too (the vocabulary's names already are); an empty name never matches."""
    if text is None or not name or not name.strip():
        return False
    return _padded(name.lower()) in _padded(text.lower())
