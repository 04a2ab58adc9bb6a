"""The measure of `codesift tune`: Acc@k of "commit message -> changed files" on the held-out commits.

Dense retrieval only (the part tuning changes), over the chunks of the source files (tests left out) as they
stood at the training cutoff, the parent of the oldest held-out commit: the tree before any held-out change,
so no held-out answer is in the corpus. A file's score is ``index.ranking.rank_files`` over its chunks, as
``codesift search --files`` ranks them; Acc@k is the share of commits with a changed file in the top k.
"""

from __future__ import annotations

from collections.abc import Sequence

from codesift.data.chunking import Chunk
from codesift.index.ranking import Candidate, rank_files
from codesift.model.encoder import Encoder
from codesift.tune.history import HeldOutCommit

KS = (1, 5, 10)
CHUNK_DEPTH = 200  # chunks looked at per query before they are grouped into files


def first_rank(files: Sequence[str], targets: Sequence[str]) -> int | None:
    """1-based rank of the first target file, None when absent."""
    return next((i for i, f in enumerate(files, start=1) if f in targets), None)


def accuracy(ranks: Sequence[int | None]) -> dict[str, float]:
    """Acc@1/5/10: the share of cases whose first target is in the top k."""
    n = max(len(ranks), 1)
    return {f"acc@{k}": round(sum(1 for r in ranks if r is not None and r <= k) / n, 4) for k in KS}


def wins(before: dict[str, float], after: dict[str, float]) -> bool:
    """Whether the tuned model beats the base: higher Acc@5, ties broken by a higher Acc@1."""
    return (after["acc@5"], after["acc@1"]) > (before["acc@5"], before["acc@1"])


def evaluate(embedder: Encoder, chunks: Sequence[Chunk], cases: Sequence[HeldOutCommit]) -> dict[str, float]:
    """Acc@k of ``embedder`` on ``cases``, searching ``chunks`` (embedded as the index embeds them)."""
    from codesift.eval.search import exact_top_k

    if not chunks or not cases:
        return accuracy([])
    docs = embedder.encode([c.text for c in chunks], task="nl2code", role="document", normalize=True,
                           truncate=True, show_progress=False)
    queries = embedder.encode([c.query for c in cases], task="nl2code", role="query", normalize=True,
                              truncate=True, show_progress=False)
    scores, idx = exact_top_k(queries, docs, min(CHUNK_DEPTH, len(chunks)))
    ranks = []
    for case, row_s, row_i in zip(cases, scores, idx):
        hits = [Candidate(str(j), float(s), chunks[j].path) for s, j in zip(row_s, row_i)]
        files = [f.path for f in rank_files(hits)][: max(KS)]
        ranks.append(first_rank(files, case.files))
    return accuracy(ranks)
