"""Text normalisation for matching, as Polars expressions (vectorised over a whole column).

paper (spec §1.3): every ASCII punctuation character of the caption becomes one space, the caption is
padded with one space at each end, nothing else changes; lemmas are only padded. A lemma matches when the
padded lemma is a substring of the padded caption.

clean: captions and lemmas go through the same steps: lower-case, every Unicode punctuation or symbol
character becomes a space, runs of whitespace become one space. For leftmost-longest matching, where
matches may not overlap, every space is then doubled and the pattern padded with single spaces, so two
adjacent words ("lion tiger") can both match without sharing a separator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from laionet.presets import Preset

if TYPE_CHECKING:  # Polars is imported only where a preset needs it: `paper` starts faster without it
    import polars as pl

# Python's string.punctuation, as the body of a regex class: 0x21-0x2F, 0x3A-0x40, 0x5B-0x60, 0x7B-0x7E.
ASCII_PUNCTUATION_CLASS = r"!-/:-@\[-`{-~"
UNICODE_PUNCTUATION_CLASS = r"\p{P}\p{S}"
ASCII_PUNCTUATION = f"[{ASCII_PUNCTUATION_CLASS}]"


def _clean_expr(expr: pl.Expr, preset: Preset, space: str = " ") -> pl.Expr:
    """Lower-cased (with case folding), every run of punctuation, symbols and whitespace as one `space`,
    no space at either end. One regex pass does what "punctuation -> space, then collapse whitespace" did
    in two (the whitespace pass alone took as long as the rest of the normalisation)."""
    if preset.case_fold:
        expr = expr.str.to_lowercase()
    punctuation = UNICODE_PUNCTUATION_CLASS if preset.unicode_punctuation else ASCII_PUNCTUATION_CLASS
    return expr.str.replace_all(f"[{punctuation}\\s]+", space, literal=False).str.strip_chars(" ")


def caption_expr(expr: pl.Expr, preset: Preset) -> pl.Expr:
    """The haystack the Aho-Corasick automaton runs over."""
    import polars as pl

    if not preset.normalize_lemmas:  # paper
        return pl.concat_str([pl.lit(" "), expr.str.replace_all(ASCII_PUNCTUATION, " "), pl.lit(" ")])
    if preset.longest_match:  # words two spaces apart (see the module docstring)
        return pl.concat_str([pl.lit("  "), _clean_expr(expr, preset, space="  "), pl.lit("  ")])
    return pl.concat_str([pl.lit(" "), _clean_expr(expr, preset), pl.lit(" ")])


def lemma_key_expr(expr: pl.Expr, preset: Preset) -> pl.Expr:
    """The lemma's identity for uniqueness: the exact string (paper) or its normalised form."""
    return _clean_expr(expr, preset) if preset.normalize_lemmas else expr


def pattern_expr(expr: pl.Expr, preset: Preset) -> pl.Expr:
    """The needle searched for in `caption_expr`'s haystack."""
    import polars as pl

    key = lemma_key_expr(expr, preset)
    if preset.normalize_lemmas and preset.longest_match:
        key = key.str.replace_all(" ", "  ", literal=True)
    return pl.concat_str([pl.lit(" "), key, pl.lit(" ")])


def lemma_keys(lemmas: list[str], preset: Preset) -> list[str]:
    if not preset.normalize_lemmas:  # paper: the exact string
        return list(lemmas)
    import polars as pl

    return pl.select(lemma_key_expr(pl.lit(pl.Series(lemmas, dtype=pl.String)), preset)).to_series().to_list()


def patterns(lemmas: list[str], preset: Preset) -> list[str]:
    if not preset.normalize_lemmas:  # paper: the lemma padded with one space
        return [f" {lemma} " for lemma in lemmas]
    import polars as pl

    return pl.select(pattern_expr(pl.lit(pl.Series(lemmas, dtype=pl.String)), preset)).to_series().to_list()
