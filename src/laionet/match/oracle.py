"""The obviously-correct matcher, used as the test oracle: the original per-row loop, in plain Python.

`paper`: for each caption, replace every `string.punctuation` character by a space, pad with a space on
each side, and test every lemma (padded) as a substring (spec §1.3, §2.3). `clean`: normalise caption and
lemmas alike, split into words, and scan left to right taking the longest lemma that starts at each word.
"""

from __future__ import annotations

import re
import string
import unicodedata

from laionet.presets import Preset


def paper_caption(text: str) -> str:
    for char in string.punctuation:
        text = text.replace(char, " ")
    return " " + text + " "


def clean_words(text: str, preset: Preset) -> list[str]:
    if preset.case_fold:
        text = text.lower()
    chars = []
    for char in text:
        if preset.unicode_punctuation:
            is_punct = unicodedata.category(char)[0] in "PS"
        else:
            is_punct = char in string.punctuation
        chars.append(" " if is_punct else char)
    return re.split(r"\s+", "".join(chars).strip()) if "".join(chars).strip() else []


def match_caption(text: str | None, lemma_to_wnid: dict[str, str], preset: Preset) -> list[tuple[str, str]]:
    """(wnid, lemma) pairs matched in one caption, in vocabulary order."""
    return OracleMatcher(lemma_to_wnid, preset).match(text)


class OracleMatcher:
    def __init__(self, lemma_to_wnid: dict[str, str], preset: Preset):
        self.lemma_to_wnid = lemma_to_wnid
        self.preset = preset
        self.by_words: dict[tuple[str, ...], str] = {}
        if preset.normalize_lemmas:
            for lemma in lemma_to_wnid:
                self.by_words.setdefault(tuple(clean_words(lemma, preset)), lemma)
            self.by_words.pop((), None)
        self.longest = max((len(words) for words in self.by_words), default=0)

    def match(self, text: str | None) -> list[tuple[str, str]]:
        if text is None:
            return []
        if not self.preset.normalize_lemmas:
            caption = paper_caption(text)
            return [(wnid, lemma) for lemma, wnid in self.lemma_to_wnid.items() if " " + lemma + " " in caption]
        words = clean_words(text, self.preset)
        found, i = set(), 0
        while i < len(words):
            for size in range(min(self.longest, len(words) - i), 0, -1):
                lemma = self.by_words.get(tuple(words[i:i + size]))
                if lemma is not None:
                    found.add(lemma)
                    i += size
                    break
            else:
                i += 1
        return [(wnid, lemma) for lemma, wnid in self.lemma_to_wnid.items() if lemma in found]
