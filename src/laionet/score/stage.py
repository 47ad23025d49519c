"""The score stage: cosine similarity of each caption with its class's query text (spec §3.3).

Per shard: identical captions are encoded once, captions are batched in order of length (less padding,
so faster), and the class queries were encoded once at setup. Embeddings are L2-normalised, so the
similarity is their dot product.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from laionet.errors import LaionetError
from laionet.io.inputs import Shard
from laionet.score.encoders import encode_unique, load_text_encoder, parse_spec
from laionet.vocab.templates import QUERY_TEMPLATES

# The original replaced a missing caption by the literal string 'None' (spec §3.2).
MISSING_TEXT = "None"


class ScoreStage:
    name = "score"
    outputs = ("scored",)
    columns = None  # all input columns travel on to the dataset
    max_workers = 1  # one model; Torch already uses every core (or the GPU) inside a batch

    def __init__(self, vocab: pa.Table, encoder: str, text_col: str, query: str = "name_def",
                 batch_size: int | None = None, device: str | None = None, checkpoint: str | None = None,
                 precision: str = "auto", encoder_factory=load_text_encoder):
        if query not in QUERY_TEMPLATES:
            raise LaionetError(f"unknown query template {query!r}; choose one of: {', '.join(QUERY_TEMPLATES)}")
        self.spec = parse_spec(encoder)
        self.text_col = text_col
        self.query = query
        self.batch_size = batch_size
        self.device = device
        self.checkpoint = checkpoint
        self.precision = precision
        self.wnids = vocab.column("wnid").to_pylist()
        self.queries = vocab.column(query).to_pylist()
        self._factory = encoder_factory
        self.encoder = None
        self.query_embeddings: np.ndarray | None = None  # filled class by class, as classes turn up
        self._encoded: np.ndarray | None = None
        self.row_of_wnid = {wnid: i for i, wnid in enumerate(self.wnids)}

    @property
    def uses_gpu(self) -> bool:
        from laionet.score.encoders import pick_device

        return not pick_device(self.device).startswith("cpu")

    def setup(self) -> None:
        if self.encoder is None:
            self.encoder = self._factory(self.spec, device=self.device, checkpoint=self.checkpoint,
                                         precision=self.precision)

    def __getstate__(self) -> dict:
        # send the stage to Ray workers without its model: each worker loads it in setup()
        return dict(self.__dict__, encoder=None, query_embeddings=None, _encoded=None)

    def _query_rows(self, wnids: list[str]) -> np.ndarray:
        """Rows of `query_embeddings` for `wnids`, encoding each class's query the first time it is needed
        (a sample touches a few hundred classes; ImageNet-21k has 21,843)."""
        rows = np.fromiter((self.row_of_wnid[w] for w in wnids), dtype=np.int64, count=len(wnids))
        if self.query_embeddings is None:
            self.query_embeddings = np.zeros((len(self.queries), 0), dtype=np.float32)
            self._encoded = np.zeros(len(self.queries), dtype=bool)
        todo = np.unique(rows[~self._encoded[rows]])
        if len(todo):
            embeddings = self.encoder.encode([self.queries[i] for i in todo], batch_size=self.batch_size)
            if self.query_embeddings.shape[1] == 0:
                self.query_embeddings = np.zeros((len(self.queries), embeddings.shape[1]), dtype=np.float32)
            self.query_embeddings[todo] = embeddings
            self._encoded[todo] = True
        return rows

    def process(self, table: pa.Table, shard: Shard) -> tuple[dict[str, pa.Table], dict]:
        self.setup()
        wnids = table.column("wnid").to_pylist()
        unknown = sorted({w for w in wnids if w not in self.row_of_wnid})
        if unknown:
            raise LaionetError(f"{shard.path}: wnid {unknown[0]!r} is not in the vocabulary "
                               f"({len(unknown)} unknown wnid(s))")
        query_rows = self._query_rows(wnids)
        texts = [MISSING_TEXT if t is None else t for t in table.column(self.text_col).to_pylist()]
        caption_embeddings, unique = encode_unique(self.encoder, texts, self.batch_size)
        similarity = np.einsum("ij,ij->i", caption_embeddings, self.query_embeddings[query_rows])
        queries = pa.array([self.queries[i] for i in query_rows], pa.string())
        scored = table.append_column("query", queries).append_column("similarity", pa.array(similarity, pa.float32()))
        return {"scored": scored}, {"rows_scored": table.num_rows, "unique_captions": unique}

    def output_schema(self, output: str, input_schema: pa.Schema) -> pa.Schema:
        return input_schema.append(pa.field("query", pa.string())).append(pa.field("similarity", pa.float32()))
