"""Search for agents: code-aware ranking, exact identifiers, file results, long queries, token budgets."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from codesift.index import IndexConfig, build_index, open_index
from codesift.index.ranking import (
    Candidate,
    RankingPriors,
    fit_budget,
    fuse_windows,
    is_doc_path,
    query_identifiers,
    query_windows,
    rank_files,
    rerank,
    snippet_tokens,
)
from codesift.testing import StandInEncoder


class BagOfWords(StandInEncoder):
    """A deterministic stand-in model: a text's vector is its hashed bag of lowercase words; one token per word.

    Similar words mean similar vectors, so where a query's words sit (inside or past the model's limit) decides
    what dense search can find, which is what the long-query tests need.
    """

    name, dimension, matryoshka_dims, fingerprint = "bag-of-words", 256, (64, 256), "bag-of-words-256"

    def __init__(self, max_length: int = 4096) -> None:
        self.max_length = max_length
        self.calls: list[list[str]] = []

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z]+", text.lower())

    def count_tokens(self, texts, task="nl2code", role="query"):
        return [len(self.words(t)) + 2 for t in texts]

    def encode(self, texts, task="nl2code", role="query", normalize=True, truncate=False, show_progress=False, **_):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            words = self.words(t)
            if truncate:
                words = words[: self.max_length - 2]
            elif len(words) + 2 > self.max_length:
                raise ValueError("input too long")
            for w in words:
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dimension] += 1.0
        out += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def make_repo(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def index(root: Path, emb) -> None:
    build_index(root, config=IndexConfig(model="bag-of-words"), embedder=emb)


# ---------------------------------------------------------------- pure functions
def test_query_identifiers():
    names, lookup = query_identifiers("why does rrf_fuse drop rows from TokenBudgetBatcher and CodeIndex.search?")
    assert {"rrf_fuse", "TokenBudgetBatcher", "CodeIndex.search", "search"} <= names and not lookup
    assert "drop" not in names and "why" not in names
    assert query_identifiers("pool") == ({"pool"}, True)
    assert query_identifiers("`pool()`")[1] and "pool" in query_identifiers("`pool()`")[0]
    assert "pool" in query_identifiers("what calls pool() here")[0]
    assert query_identifiers("parse a config file") == (set(), False)
    assert query_identifiers("use it, e.g. when i.e. x_y is set")[0] == {"x_y"}


def test_doc_paths():
    assert is_doc_path("CHANGELOG.md") and is_doc_path("docs/api/index.py") and is_doc_path("README")
    assert is_doc_path("notes.txt") and is_doc_path("x.rst", "rst")
    assert not is_doc_path("src/docs_builder.py") and not is_doc_path("src/app.py", "python")


def test_rerank_priors_tests_docs_definitions_identifiers():
    def cands():
        return [Candidate("t", 1.0, "tests/test_a.py", "python", "test_parse", "function", True),
                Candidate("d", 0.99, "CHANGELOG.md", "markdown", "", "block"),
                Candidate("r", 0.98, "src/use.py", "python", "", "block"),
                Candidate("s", 0.9, "src/a.py", "python", "parse", "function")]

    pri = RankingPriors()
    assert [c.id for c in rerank(cands(), "parse things", pri)] == ["s", "r", "t", "d"]
    assert next(c.id for c in rerank(cands(), "tests for parse things", pri)) == "t"
    assert next(c.id for c in rerank(cands(), "changelog of parse things", pri)) == "d"
    assert [c.id for c in rerank(cands(), "parse things", RankingPriors(1, 1, 1, 1))] == ["t", "d", "r", "s"]
    # a one-identifier query is a lookup: its definitions come first whatever the scores
    low = cands() + [Candidate("def", -0.5, "src/z.py", "python", "Z.frobnicate", "method")]
    assert rerank(low, "frobnicate", pri)[0].id == "def"
    # a negative (cosine) score still moves down when a factor < 1 applies
    neg = [Candidate("a", -0.2, "tests/test_x.py", "python", "", "function", True)]
    assert rerank(neg, "x", pri)[0].score < -0.2


def test_rank_files_sums_decaying_evidence():
    cs = [Candidate("a1", 1.0, "a.py"), Candidate("b1", 0.9, "b.py"), Candidate("b2", 0.8, "b.py"),
          Candidate("b3", 0.7, "b.py"), Candidate("b4", 0.7, "b.py")]
    files = rank_files(cs, (1.0, 0.5, 0.25))
    assert [f.path for f in files] == ["b.py", "a.py"]
    assert files[0].score == pytest.approx(0.9 + 0.4 + 0.175) and len(files[0].chunks) == 3
    assert [f.path for f in rank_files(cs, (1.0,))] == ["a.py", "b.py"]  # max only


def test_query_windows_pack_lines_within_budget():
    def count(xs):
        return [len(x.split()) for x in xs]
    text = "\n".join(f"line {i} " + "word " * 5 for i in range(20)) + "\n" + "long " * 50
    windows = query_windows(text, count, budget=16)
    assert len(windows) > 1 and all(sum(count([w])) <= 16 + 2 for w in windows)
    assert " ".join(w.replace("\n", " ") for w in windows).split() == text.split()
    assert len(query_windows(text, count, budget=16, max_windows=3)) == 3
    paras = "one two three four\nfive six\n\nseven eight nine ten\n\nx\n\neleven twelve thirteen fourteen"
    assert query_windows(paras, count, budget=100) == [paras.strip()]  # packed to the budget
    assert query_windows(paras, count, budget=100, min_tokens=4) == [
        "one two three four\nfive six", "seven eight nine ten", "x\n\neleven twelve thirteen fourteen"]


def test_fuse_windows():
    lists = [[("a", 0.9), ("b", 0.5)], [("b", 0.95), ("c", 0.4)]]
    assert fuse_windows(lists, "max") == [("b", 0.95), ("a", 0.9), ("c", 0.4)]
    assert fuse_windows(lists, "rrf")[0][0] == "b"
    with pytest.raises(ValueError):
        fuse_windows(lists, "median")


def test_budget_counts_words_and_punctuation():
    assert snippet_tokens("def f(x):\n    return x + 1") == 10  # def f ( x ) : return x + 1
    snippets = ["a b c", "d e\nf g h", "i j"]
    assert fit_budget(snippets, 100) == snippets
    assert fit_budget(snippets, 6) == ["a b c", "d e", None]
    assert fit_budget(snippets, 3) == ["a b c", None, None]
    with pytest.raises(ValueError):
        fit_budget(snippets, 0)


# ---------------------------------------------------------------- through an index
REPO = {
    "src/fusion.py": "def rrf_fuse(lists, weights, k):\n    return sorted(lists)\n\n\n"
                     "def pool(hidden, mask):\n    return hidden.mean(0)\n",
    "src/parse.py": "def parse_config(path):\n    return open(path).read()\n",
    "tests/test_parse.py": "def test_parse_config():\n    assert parse_config('parse config parse config')\n"
                           "    assert parse_config('config')\n",
    "docs/config.md": "# Config\n\nparse config parse config: how to parse a config file.\n",
}
REPO |= {f"src/user{i}.py": f"def user_{i}(x):\n    y = rrf_fuse(x, [1], 60)\n    z = pool(y, x)\n    return pool(z, y)\n"
         for i in range(40)}


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    make_repo(root, REPO)
    emb = BagOfWords()
    index(root, emb)
    return root, emb


def test_exact_identifiers_find_their_definition(repo):
    root, emb = repo
    with open_index(root, embedder=emb) as ix:
        for mode in ("hybrid", "bm25", "dense"):
            for q in ("rrf_fuse", "pool", "why is rrf_fuse slow when called from user code"):
                top = ix.search(q, limit=3, mode=mode)[0]
                want = q if " " not in q else "rrf_fuse"
                assert top.path == "src/fusion.py" and want in top.symbol.split(", "), (mode, q)
        # plain fusion ranks the 40 callers of `pool` (more mentions) above its definition
        plain = ix.search("pool", limit=5, mode="bm25", rerank=False)
        assert "src/fusion.py" not in [r.path for r in plain][:1]


def test_source_above_tests_and_docs_unless_asked(repo):
    root, emb = repo
    with open_index(root, embedder=emb) as ix:
        plain = [r.path for r in ix.search("parse config", limit=3, rerank=False)]
        assert plain[0] != "src/parse.py"
        assert ix.search("parse config", limit=3)[0].path == "src/parse.py"
        assert ix.search("tests for parse config", limit=3)[0].path == "tests/test_parse.py"
        assert ix.search("docs: parse config", limit=3)[0].path == "docs/config.md"


def test_search_files_and_budget(repo):
    root, emb = repo
    with open_index(root, embedder=emb) as ix:
        files = ix.search_files("parse config", limit=3)
        assert files[0].path == "src/parse.py" and len({f.path for f in files}) == len(files)
        d = files[0].to_dict()
        assert {"path", "score", "language", "start_line", "end_line", "symbol", "kind", "snippet", "chunks"} <= set(d)
        assert d["chunks"][0]["start_line"] == d["start_line"] and d["symbol"] == "parse_config"
        json.dumps(d)
        full = ix.search("rrf_fuse pool", limit=10)
        cut = ix.search("rrf_fuse pool", limit=10, budget=30)
        assert sum(snippet_tokens(r.snippet) for r in cut) <= 30 < sum(snippet_tokens(r.snippet) for r in full)
        assert [r.id for r in cut] == [r.id for r in full][: len(cut)]
        assert len(ix.search("rrf_fuse pool", limit=10, budget=1)) == 1
        with pytest.raises(ValueError, match="budget"):
            ix.search("pool", budget=0)
        with pytest.raises(ValueError, match="task"):
            ix.search("pool", task="summarize")


def test_long_query_windows_beat_truncation(tmp_path):
    root = tmp_path / "repo"
    make_repo(root, {"src/zebra.py": "def stripes():\n    return 'zebra stripes savanna grazing herd'\n",
                     "src/other.py": "def unrelated():\n    return 'network socket buffer'\n"})
    emb = BagOfWords(max_length=24)
    index(root, emb)
    noise = "\n".join("the quick fox jumps over a lazy dog again and again" for _ in range(12))
    query = noise + "\nzebra stripes savanna grazing herd"
    with open_index(root, embedder=emb) as ix:
        assert len(ix.query_vectors("zebra stripes")) == 1
        vecs = ix.query_vectors(query)
        assert len(vecs) > 1 and all(len(w) <= 24 for w in (BagOfWords.words(t) for t in emb.calls[-1]))
        for how, found in (("max", True), ("truncate", False)):  # rrf: the noise windows outvote the one that matters
            ix.search_config.long_query = how
            top = ix.search(query, limit=1, mode="dense", rerank=False)[0]
            assert (top.path == "src/zebra.py") is found, how
        ix.search_config.long_query = "max"
        assert ix.search(query, limit=1, mode="hybrid")[0].path == "src/zebra.py"
        ix.search_config.long_query = "mean"
        assert len(ix.query_vectors(query)) == 1


def test_long_query_through_the_real_embedder(tmp_path, tiny_qwen_dir):
    from codesift.model.embedder import Embedder

    root = tmp_path / "repo"
    make_repo(root, {"src/a.py": REPO["src/parse.py"], "src/b.py": REPO["src/fusion.py"]})
    emb = Embedder(str(tiny_qwen_dir), max_length=32)
    build_index(root, config=IndexConfig(model=str(tiny_qwen_dir)), embedder=emb)
    long = "Traceback (most recent call last):\n" + "  File \"src/a.py\", line 2, in parse_config\n" * 40
    assert emb.count_tokens([long])[0] > 32
    with open_index(root, embedder=emb) as ix:
        for mode in ("hybrid", "dense", "bm25"):
            assert ix.search(long, limit=2, mode=mode), mode
        assert ix.search_files(long, limit=2)
        assert len(ix.query_vectors(long)) > 1


def test_explain_code_and_qa_tasks(repo, tiny_qwen_dir):
    root, emb = repo
    with open_index(root, embedder=emb) as ix:
        res = ix.explain(path="src/parse.py", line=1, limit=3)
        assert res and all(not (r.path == "src/parse.py" and r.start_line == 1) for r in res)
        assert ix.explain(code="parse config", limit=2)[0].path == "docs/config.md"  # docs are not ranked down
        assert ix.search("how do I parse a config file?", task="qa", limit=2)
        with pytest.raises(ValueError, match="path and line"):
            ix.explain(limit=2)
