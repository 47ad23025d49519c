"""Nearest-neighbour search over embedding folders: faiss indexes, search, search results as datasets."""
