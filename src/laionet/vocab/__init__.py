"""The class vocabulary: WordNet synsets with their lemmas, definitions and query texts."""

from laionet.vocab.build import build_vocab, read_vocab, write_vocab
from laionet.vocab.templates import QUERY_TEMPLATES

__all__ = ["QUERY_TEMPLATES", "build_vocab", "read_vocab", "write_vocab"]
