"""Every default of the code index in one place: walking, chunking, store, fusion."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codesift.model.loading import DEFAULT_MODEL  # one default model for the library, the index and the server

INDEX_DIRNAME = ".codesift"
DB_NAME = "manifest.sqlite"  # the index's SQLite file: manifest tables and, with the default store, the chunks
# What `codesift tune` keeps in the index folder (the installed model, its record, the resumable work): not the
# index's data, so a rebuild or a re-embed leaves them in place.
TUNED_MODEL_DIRNAME = "tuned-model"
TUNE_RECORD = "tune.json"
TUNE_WORK_DIRNAME = "tune"
KEPT_ON_REBUILD = (TUNED_MODEL_DIRNAME, TUNE_RECORD, TUNE_WORK_DIRNAME, ".gitignore")
SHARED_COLLECTION = "codesift_chunks"  # the one collection of every index made before each index named its own


def collection_name(root: str | Path, index_dir: str | Path) -> str:
    """The Milvus collection of a new index: the repository's folder name and a hash of the index folder, so that
    many indexes share one Milvus server without touching each other's chunks (``codesift_myrepo_1a2b3c4d``).

    Milvus allows letters, digits and underscores, starting with a letter or an underscore."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", Path(root).resolve().name).strip("_")[:40] or "repo"
    digest = hashlib.sha256(str(Path(index_dir).resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"codesift_{name}_{digest}"


def read_tune_record(index_dir: str | Path) -> dict | None:
    """What `codesift tune` last recorded in ``index_dir`` (None: never tuned, or an unreadable record)."""
    path = Path(index_dir) / TUNE_RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def installed_tuned_model(index_dir: str | Path) -> str | None:
    """The folder of the model `codesift tune` installed in ``index_dir``, if one is installed and present."""
    record = read_tune_record(index_dir) or {}
    model = record.get("model")
    return model if record.get("installed") and model and Path(model).is_dir() else None
# How the embedded store holds the vectors in memory (IndexConfig.vectors): "float16", the full matrix and the
# Matryoshka prefix; "binary", only the sign bits (1/16 of the float16 bytes), the nearest rescored from the file.
VECTORS = ("float16", "binary")


@dataclass
class IndexConfig:
    """How a tree is indexed and searched; stored with the index so every later run agrees."""

    model: str = DEFAULT_MODEL
    max_tokens: int = 512              # chunk cap (the paper trains at sequence length 512)
    max_file_bytes: int = 2_000_000    # bigger files are skipped as "huge"
    embed_batch_chunks: int = 256      # chunks per encode() call (packed by length into the engine's own batches) and per commit
    files_per_commit: int = 256        # files per manifest transaction when nothing needs embedding
    small_dim: int | None = None       # Matryoshka first-stage dim; None: the model's smallest dim >= 64
    # None: SQLite, in the index's own file (store.py); a Milvus server (http://host:19530) or Milvus Lite file (*.db)
    store_uri: str | None = None
    # Milvus server credentials ("user:password" or an API key): never written into the index (a repository's
    # folder others may read or commit); later runs take them from --store-token or $CODESIFT_STORE_TOKEN
    store_token: str | None = None
    # the Milvus collection; None: named after the index when it is created (``collection_name``), one per index
    collection: str | None = None
    extra_excludes: tuple[str, ...] = field(default_factory=tuple)
    # The embedding model's precision. "auto": when the index is first built, the fastest path that keeps quality
    # (model/int8.py: int8 on a CPU for a model whose int8 loss was measured within the limit, else the torch
    # dtype the hardware runs best); the choice is stored here, and search embeds its queries the same way.
    dtype: str = "auto"
    # How the embedded (SQLite) store holds the vectors in memory for search: "float16" (the full matrix, exact)
    # or "binary" (sign bits, 1/16 of the memory; the Hamming-nearest candidates rescored exactly from the file).
    # Only the layout in memory: the file is the same, so it can change on an existing index (docs/search.md).
    vectors: str = "float16"

    @classmethod
    def from_meta(cls, meta: dict) -> IndexConfig | None:
        """The config an index stored (None: none yet); an index from before ``dtype`` was stored gets the
        precision its vectors were made with, the last part of its model fingerprint."""
        stored = meta.get("config")
        if not stored:
            return None
        fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items()
                  if k in cls.__dataclass_fields__}
        fields.setdefault("collection", SHARED_COLLECTION)  # an index stored before collections were named per index
        if "dtype" not in stored and meta.get("fingerprint"):
            fields["dtype"] = str(meta["fingerprint"]).rsplit("-", 1)[-1]
        return cls(**fields)

    def to_meta(self) -> dict:
        """The settings stored in the index: every field but the credentials."""
        return {k: v for k, v in asdict(self).items() if k != "store_token"}


@dataclass
class SearchConfig:
    """Hybrid search knobs: reciprocal-rank fusion of dense and BM25 candidate lists."""

    rrf_k: float = 60.0                # the usual RRF constant
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    candidates: int = 100              # per-list depth fed into fusion (at least 5 x limit)
    rerank_factor: int = 10            # two-stage: small-dim candidates = rerank_factor x limit (at least 100)
    snippet_lines: int = 30            # lines of chunk text in a result's snippet
    # a query over the model's limit: "max" (windows searched apart, a chunk's best similarity; measured best,
    # docs/search.md), "rrf" (windows' lists fused by rank), "mean" (mean window vector) or "truncate" (head only)
    long_query: str = "max"
    max_query_windows: int = 32        # windows past this many are dropped (about 32 x the model's limit)
    # windows end at a paragraph break (blank line) once they hold this many tokens; None: packed to the limit
    window_min_tokens: int | None = 16
    # code-aware ranking (ranking.py): score factors; 1.0 turns one off
    test_factor: float = 0.5
    doc_factor: float = 0.5
    reference_factor: float = 0.85
    identifier_factor: float = 3.0
    file_chunk_weights: tuple[float, ...] = (1.0, 0.5, 0.25)  # a file's score: its best chunks, decaying
    task_rerank_depth: int = 20        # qa / code2nl: top candidates re-embedded with the task's document prefix

    def priors(self):
        """The ranking factors as ``ranking.RankingPriors``."""
        from codesift.index.ranking import RankingPriors

        return RankingPriors(self.test_factor, self.doc_factor, self.reference_factor, self.identifier_factor)
