"""The original text-to-query scoring loop, re-implemented for comparison only. Do not use it.

The baseline of `bench_score.py` (`/work/shared/reference/original-system.md` §3.2-3.3): the candidates
are a pandas DataFrame indexed by row id with a query column; the loop walks the rows in file order in
batches of 64 and, per batch,

- takes the captions and the queries with `df.loc[batch, col]` (a missing caption becomes 'None');
- encodes the captions, then the queries, separately: every batch re-encodes its 64 queries even when
  they are all the same, and duplicate captions are encoded again each time;
- L2-normalises both with `sklearn.preprocessing.normalize` and takes the row-wise dot product;
- writes the similarities back with `df.loc[batch, sim_col] = ...`.

No de-duplication, no sorting by length, no reuse of query embeddings. The encoders are the original's:
sentence-transformers' `SentenceTransformer.encode(texts)` with library defaults (fp32, internal batch
32); for CLIP, the tokenizer with padding and truncation, then `text_projection(text_model(...).pooler_output)`
under `torch.no_grad()` in fp32. Other kinds (open_clip) had no original counterpart; for them the loop
uses laionet's encoder with batch size 64, so only the loop structure is the original's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BATCH_SIZE = 64  # CLIPConfig.BATCH_SIZE, and the outer batch for every encoder
REPLACE_NA_STR = "None"


class SentenceTransformerEncoder:
    def __init__(self, name_or_path: str, device: str):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(name_or_path, device=device)

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model.encode(texts, show_progress_bar=False)


class HFClipEncoder:
    def __init__(self, name_or_path: str, device: str):
        from transformers import CLIPModel, CLIPTokenizer

        self.device = device
        self.model = CLIPModel.from_pretrained(name_or_path).to(device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(name_or_path)

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
        with torch.no_grad():
            outputs = self.model.text_model(**inputs)
            return self.model.text_projection(outputs.pooler_output).cpu().numpy()


class LaionetEncoder:
    """For kinds the original never had: laionet's encoder, called per outer batch."""

    def __init__(self, spec: str, device: str):
        from laionet.score.encoders import load_text_encoder

        self.encoder = load_text_encoder(spec, device=device, precision="fp32")

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=BATCH_SIZE)


def load_original_encoder(spec: str, device: str):
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the "Loading weights" bar
    except ImportError:
        pass
    kind, _, name = spec.partition(":")
    if kind == "sentence-transformers":
        return SentenceTransformerEncoder(name or "all-mpnet-base-v2", device)
    if kind == "hf-clip":
        return HFClipEncoder(name or "openai/clip-vit-base-patch32", device)
    return LaionetEncoder(spec, device)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import normalize

    return np.sum(normalize(a) * normalize(b), axis=1)


def score_dataframe(df: pd.DataFrame, text_col: str, query_col: str, sim_col: str, encoder,
                    batch_size: int = BATCH_SIZE) -> pd.DataFrame:
    """Fill `df[sim_col]` batch by batch, in the order of `df.index`, as the original loop did."""
    if sim_col not in df:
        df[sim_col] = np.nan
    todo = list(df.index[np.isnan(df[sim_col].to_numpy(dtype=float))])
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        texts = df.loc[batch, text_col].fillna(REPLACE_NA_STR).tolist()
        queries = df.loc[batch, query_col].fillna(REPLACE_NA_STR).tolist()
        text_embeds = encoder(texts)
        query_embeds = encoder(queries)
        df.loc[batch, sim_col] = cosine_similarity(text_embeds, query_embeds).tolist()
    return df
