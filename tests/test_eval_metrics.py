"""Retrieval metrics: hand-worked cases and equality with the reference libraries on random runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codesift.eval.metrics import METRICS, evaluate_run, per_query_metrics, rank_run


def test_single_relevant_doc_at_rank_two():
    m = evaluate_run({"q": {"d1": 1}}, {"q": {"d2": 0.9, "d1": 0.8, "d3": 0.1}})
    assert m["ndcg_at_10"] == pytest.approx(1 / math.log2(3))  # DCG 1/log2(3), ideal 1
    assert m["mrr_at_10"] == pytest.approx(0.5)
    assert m["recall_at_1"] == 0.0
    assert m["recall_at_10"] == 1.0
    assert m["map_at_100"] == pytest.approx(0.5)


def test_graded_relevance_two_relevant_docs():
    # ranks: a (gain 2), x (0), b (gain 1)
    m = evaluate_run({"q": {"a": 2, "b": 1}}, {"q": {"a": 3.0, "x": 2.0, "b": 1.0}})
    dcg = 2 / math.log2(2) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg_at_10"] == pytest.approx(dcg / idcg)
    assert m["mrr_at_10"] == 1.0
    assert m["recall_at_1"] == pytest.approx(0.5)
    assert m["map_at_100"] == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_relevant_doc_at_rank_eleven_counts_only_beyond_ten():
    run = {"q": {f"n{i:02d}": 100.0 - i for i in range(10)} | {"rel": 1.0}}
    m = evaluate_run({"q": {"rel": 1}}, run)
    assert m["ndcg_at_10"] == 0.0 and m["mrr_at_10"] == 0.0 and m["recall_at_10"] == 0.0
    assert m["recall_at_100"] == 1.0
    assert m["map_at_100"] == pytest.approx(1 / 11)


def test_unanswered_query_counts_as_zero_and_nonrelevant_only_queries_are_skipped():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    m = evaluate_run(qrels, {"q1": {"a": 1.0}})
    assert m["ndcg_at_10"] == pytest.approx(0.5)  # q1 perfect, q2 missing -> 0, q3 not judged relevant -> skipped
    assert set(per_query_metrics(qrels, {"q1": {"a": 1.0}})) == {"q1", "q2"}


def test_ties_are_broken_by_doc_id():
    assert rank_run({"q": {"b": 1.0, "a": 1.0, "c": 2.0}}) == {"q": ["c", "a", "b"]}
    assert evaluate_run({"q": {"b": 1}}, {"q": {"b": 1.0, "a": 1.0}})["mrr_at_10"] == pytest.approx(0.5)


def test_no_relevant_docs_is_an_error():
    with pytest.raises(ValueError, match="no relevant"):
        evaluate_run({"q": {"a": 0}}, {"q": {"a": 1.0}})


def _random_qrels_and_run(seed: int, n_queries: int = 40, n_docs: int = 300, depth: int = 150):
    rng = np.random.default_rng(seed)
    qrels = {
        f"q{i}": {f"d{j}": int(rng.integers(1, 3)) for j in rng.choice(n_docs, size=int(rng.integers(1, 6)), replace=False)}
        for i in range(n_queries)
    }
    # Distinct scores (no ties), and a few queries left unanswered.
    run = {
        f"q{i}": {f"d{j}": float(s) for j, s in zip(rng.choice(n_docs, size=depth, replace=False), rng.random(depth))}
        for i in range(n_queries - 3)
    }
    # Put some relevant docs near the top so the metrics are not all near zero.
    for qid in list(run)[::2]:
        for d in qrels[qid]:
            run[qid][d] = 1.0 + float(rng.random())
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_pytrec_eval_on_random_runs(seed):
    import pytrec_eval

    qrels, run = _random_qrels_and_run(seed)
    ours = evaluate_run(qrels, run)
    measures = {"ndcg_cut.10", "recall.1,10,100", "map_cut.100", "recip_rank"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(
        {q: dict(sorted(s.items(), key=lambda kv: -kv[1])[:10]) for q, s in run.items()}  # MRR@10 = recip_rank on top 10
    )
    full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    n = len(qrels)
    expect = {
        "ndcg_at_10": sum(v["ndcg_cut_10"] for v in full.values()) / n,
        "mrr_at_10": sum(v["recip_rank"] for v in ref.values()) / n,
        "recall_at_1": sum(v["recall_1"] for v in full.values()) / n,
        "recall_at_10": sum(v["recall_10"] for v in full.values()) / n,
        "recall_at_100": sum(v["recall_100"] for v in full.values()) / n,
        "map_at_100": sum(v["map_cut_100"] for v in full.values()) / n,
    }
    assert ours["ndcg_at_10"] > 0.1
    for m in METRICS:
        assert ours[m] == pytest.approx(expect[m], abs=1e-12), m


@pytest.mark.slow  # ranx compiles its numba kernels on first use (minutes on a busy CPU)
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_ranx_on_random_runs(seed):
    pytest.importorskip("ranx")
    from ranx import Qrels, Run, evaluate

    qrels, run = _random_qrels_and_run(seed)
    ours = evaluate_run(qrels, run)
    names = {"ndcg_at_10": "ndcg@10", "mrr_at_10": "mrr@10", "recall_at_1": "recall@1", "recall_at_10": "recall@10",
             "recall_at_100": "recall@100", "map_at_100": "map@100"}
    ref = evaluate(Qrels(qrels), Run(run | {q: {} for q in qrels if q not in run}), list(names.values()),
                   make_comparable=True)
    for m, r in names.items():
        assert ours[m] == pytest.approx(float(ref[r]), abs=1e-9), m
