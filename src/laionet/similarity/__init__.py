"""Intra-class image similarity (spec §8): per class, pairwise cosines of a seeded sample's image embeddings."""
