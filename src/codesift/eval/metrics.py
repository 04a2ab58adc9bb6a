"""Retrieval metrics through pytrec_eval (the trec_eval reference code): nDCG@10, MRR@10, Recall@k, MAP@100.

Runs are ranked by score, ties broken by document id (ascending), and the ranks are handed to trec_eval so
every metric sees the same order. Each metric is the mean over all judged queries: a query that the run does
not answer counts as 0.
"""

from __future__ import annotations

from collections.abc import Mapping

METRICS: tuple[str, ...] = ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10", "recall_at_100", "map_at_100")
MAIN_METRIC = "ndcg_at_10"

_TREC_MEASURES = {"ndcg_cut.10", "recall.1,10,100", "map_cut.100"}
_TREC_NAMES = {
    "ndcg_cut_10": "ndcg_at_10",
    "recall_1": "recall_at_1",
    "recall_10": "recall_at_10",
    "recall_100": "recall_at_100",
    "map_cut_100": "map_at_100",
}

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def rank_run(run: Run, depth: int | None = None) -> dict[str, list[str]]:
    """Each query's documents by decreasing score (ties: ascending document id), cut at ``depth``."""
    ranked = {}
    for qid, scores in run.items():
        order = sorted(scores.items(), key=lambda kv: (-float(kv[1]), kv[0]))
        ranked[qid] = [d for d, _ in order[:depth]]
    return ranked


def _as_rank_scores(ranked: Mapping[str, list[str]]) -> dict[str, dict[str, float]]:
    # trec_eval sorts by score and breaks ties by reversed docno; strictly decreasing scores fix our order.
    return {qid: {d: float(len(docs) - i) for i, d in enumerate(docs)} for qid, docs in ranked.items()}


def per_query_metrics(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """Every metric of :data:`METRICS` for each judged query with a relevant document (unanswered -> 0)."""
    import pytrec_eval

    judged = {q: {d: int(s) for d, s in rels.items()} for q, rels in qrels.items() if any(s > 0 for s in rels.values())}
    if not judged:
        raise ValueError("qrels hold no relevant document (score > 0); nothing to evaluate")
    ranked = rank_run({q: s for q, s in run.items() if q in judged})
    full = pytrec_eval.RelevanceEvaluator(judged, _TREC_MEASURES).evaluate(_as_rank_scores(ranked))
    top10 = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(
        _as_rank_scores({q: docs[:10] for q, docs in ranked.items()})
    )
    out: dict[str, dict[str, float]] = {}
    for qid in judged:
        row = dict.fromkeys(METRICS, 0.0)
        for trec_name, name in _TREC_NAMES.items():
            row[name] = float(full.get(qid, {}).get(trec_name, 0.0))
        row["mrr_at_10"] = float(top10.get(qid, {}).get("recip_rank", 0.0))
        out[qid] = row
    return out


def evaluate_run(qrels: Qrels, run: Run) -> dict[str, float]:
    """Mean of every metric of :data:`METRICS` over the judged queries (values in [0, 1])."""
    rows = per_query_metrics(qrels, run)
    return {m: sum(r[m] for r in rows.values()) / len(rows) for m in METRICS}
