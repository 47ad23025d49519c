"""CLIP zero-shot classification and image-to-query similarity (`laionet zeroshot`, spec §7.4, §9.5)."""
