"""Caption-to-lemma matching (spec §1.3)."""
