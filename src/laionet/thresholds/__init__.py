"""Multimodal threshold pairs (text, image) of equal dataset size: the paper's datasets A–D (spec §9.5)."""
