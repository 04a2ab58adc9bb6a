"""Exact top-k search, Matryoshka truncation and the BM25 baseline."""

from __future__ import annotations

import numpy as np
import pytest

from codesift.data.terms import code_terms
from codesift.eval.bm25 import BM25Index
from codesift.eval.search import exact_top_k, to_run
from codesift.model.norm import truncate_normalize


@pytest.mark.parametrize("doc_chunk,query_chunk", [(7, 3), (1000, 1000), (1, 1)])
def test_exact_top_k_matches_brute_force_for_any_chunking(doc_chunk, query_chunk):
    rng = np.random.default_rng(0)
    q, d = rng.standard_normal((9, 16)).astype(np.float32), rng.standard_normal((50, 16)).astype(np.float32)
    scores, idx = exact_top_k(q, d, 12, doc_chunk=doc_chunk, query_chunk=query_chunk)
    full = q @ d.T
    assert idx.shape == (9, 12)
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1, kind="stable")[:, :12])
    np.testing.assert_allclose(scores, np.take_along_axis(full, idx, 1), rtol=1e-5)


def test_exact_top_k_ties_keep_lower_index_across_chunks_and_k_is_capped():
    _, idx = exact_top_k(np.ones((1, 2), np.float32), np.ones((5, 2), np.float32), 10, doc_chunk=2)
    assert idx.tolist() == [[0, 1, 2, 3, 4]]


def test_truncate_normalize_renormalises_the_prefix():
    v = np.array([[3.0, 4.0, 12.0]], np.float32)
    np.testing.assert_allclose(truncate_normalize(v, 2), [[0.6, 0.8]], rtol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        truncate_normalize(v, 4)


def test_to_run_maps_indices_to_ids():
    run = to_run(["q"], ["a", "b", "c"], np.array([[0.9, 0.1]]), np.array([[2, 0]]))
    assert run == {"q": {"c": pytest.approx(0.9), "a": pytest.approx(0.1)}}


def test_code_terms_split_identifiers_and_are_the_index_terms():
    from codesift.index.store import keyword_text

    text = "def getUserName(http_server): return None"
    toks = code_terms(text)
    assert {"getusernam", "get", "user", "name", "http_server", "http", "server"} <= set(toks)  # "getusername": stemmed
    assert keyword_text(text) == " ".join(toks)


def test_bm25_ranks_the_matching_document_first_and_handles_unknown_words():
    docs = ["def add_numbers(a, b): return a + b", "def read_file(path): return open(path).read()",
            "class Stack: def push(self, item): ...", ""]
    index = BM25Index(docs)
    scores, idx = index.search(["add two numbers", "push an item on a stack", "zzzz qqqq"], 3)
    assert idx[0, 0] == 0 and idx[1, 0] == 2
    assert scores[2].tolist() == [0.0, 0.0, 0.0] and idx[2].tolist() == [0, 1, 2]


def test_l2_normalize_rows_vectors_and_zeros():
    from codesift.model.norm import l2_normalize

    np.testing.assert_allclose(l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(l2_normalize(np.array([0.0, 2.0])), [0.0, 1.0])
    assert l2_normalize(np.ones((2, 3), dtype=np.float64)).dtype == np.float32
