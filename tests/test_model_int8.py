"""The int8 CPU path (model/int8.py): agreement with float32, the export cache, and which dtype `auto` picks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from codesift.index import IndexConfig, build_index, open_index
from codesift.model import int8
from codesift.model.embedder import Embedder
from codesift.model.encoder import Encoder
from codesift.testing import make_tiny_bert

TEXTS = ["def add(a, b):\n    return a + b", "open a file and read every line",
         "class Stack:\n    def push(self, x): ...", "SELECT name FROM users WHERE id = 1", "x" * 40]
# int8 weights and per-batch int8 activations against float32: the tolerance the tiny model must meet
# (codesift-mini measures mean 0.991 / min 0.98 on real code; BENCHMARKS.md)
MIN_COSINE = 0.99


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """The module's own cache folder: each model is exported once for all its tests."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODESIFT_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny random BERT big enough for int8 to be measurable (64 dims, FFN 128)."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert64"), hidden_size=64)


def with_int8_record(src, dst, loss: float, recipe: str = int8.RECIPE):
    """A copy of the model folder whose codesift.json records a measured int8 loss."""
    shutil.copytree(src, dst)
    (dst / "codesift.json").write_text(json.dumps({"pooling": "mean", "int8": {"recipe": recipe, "ndcg10_loss": loss}}))
    return dst


def test_int8_agrees_with_float32(bert_dir):
    ref = Embedder(bert_dir, device="cpu", dtype="float32")
    fast = Embedder(bert_dir, device="cpu", dtype="int8")
    assert fast.precision == "int8" and fast.engine is not None and ref.engine is None
    assert isinstance(fast, Encoder) and isinstance(ref, Encoder)  # both paths are the one protocol
    for role in ("query", "document"):
        a = ref.encode(TEXTS, role=role)
        b = fast.encode(TEXTS, role=role)
        assert b.dtype == np.float32 and b.shape == a.shape
        assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
        cos = np.sum(a * b, axis=1)
        assert cos.min() >= MIN_COSINE, cos
    # the same text alone or in a padded batch: one vector (padding is masked out on the int8 path too)
    alone = fast.encode([TEXTS[1]])[0]
    assert float(alone @ fast.encode(TEXTS)[1]) >= 0.9999
    # Matryoshka truncation and the fingerprint follow the int8 path
    assert fast.encode(TEXTS, dim=16).shape == (len(TEXTS), 16)
    assert fast.fingerprint.endswith("int8." + int8.RECIPE) and fast.fingerprint != ref.fingerprint


def test_export_is_cached_and_reused(tmp_path, bert_dir, monkeypatch):
    monkeypatch.setenv("CODESIFT_CACHE", str(tmp_path / "own"))
    first = Embedder(bert_dir, device="cpu", dtype="int8")
    path = first.engine.path
    assert path.is_file() and path.is_relative_to(tmp_path / "own" / "onnx")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary leftovers
    stamp = path.stat().st_mtime_ns

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(int8, "export_onnx", no_export)
    again = Embedder(bert_dir, device="cpu", dtype="int8")
    assert again.engine.path == path and path.stat().st_mtime_ns == stamp
    assert np.allclose(first.encode(TEXTS), again.encode(TEXTS), atol=1e-6)


def test_cache_is_keyed_by_the_weights(tmp_path, bert_dir):
    other = make_tiny_bert(tmp_path / "other", hidden_size=64, seed=1)
    a = Embedder(bert_dir, device="cpu", dtype="int8").engine.path
    b = Embedder(other, device="cpu", dtype="int8").engine.path
    assert a != b and a.is_file() and b.is_file()


def test_int8_refuses_what_it_cannot_run(tiny_qwen_dir, bert_dir):
    with pytest.raises(ValueError, match="encoder models"):
        Embedder(tiny_qwen_dir, device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="valid: auto, int8"):
        Embedder(bert_dir, device="cpu", dtype="int4")


def test_auto_picks_int8_only_where_its_loss_was_measured(tmp_path, bert_dir, monkeypatch):
    monkeypatch.setattr(int8, "cpu_has_int8_dot", lambda: True)
    assert int8.fastest_dtype(str(bert_dir), "cpu") == "auto"  # never measured
    good = with_int8_record(bert_dir, tmp_path / "good", loss=0.2)
    assert int8.fastest_dtype(str(good), "cpu") == "int8"
    assert int8.fastest_dtype(str(with_int8_record(bert_dir, tmp_path / "lossy", loss=0.9)), "cpu") == "auto"
    stale = with_int8_record(bert_dir, tmp_path / "stale", loss=0.2, recipe="an-older-recipe")
    assert int8.fastest_dtype(str(stale), "cpu") == "auto"


def test_auto_keeps_float32_on_a_cpu_without_int8_dot_products(tmp_path, bert_dir, monkeypatch):
    good = with_int8_record(bert_dir, tmp_path / "good", loss=0.2)
    monkeypatch.setattr(int8, "cpu_has_int8_dot", lambda: False)  # plain AVX2: int8 measured no faster
    assert int8.fastest_dtype(str(good), "cpu") == "auto"


def test_cpu_flags_come_from_cpuinfo():
    from codesift.model.device import cpu_flags, cpu_has_fast_bf16, cpu_has_int8_dot

    flags = cpu_flags()
    assert cpu_has_int8_dot() == bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    assert cpu_has_fast_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_the_shipped_model_records_its_int8_quality():
    from codesift.model.loading import resolve_model

    record = resolve_model("codesift-mini").int8_quality
    assert record["recipe"] == int8.RECIPE and isinstance(record["ndcg10_loss"], float)
    fast = record["ndcg10_loss"] <= int8.MAX_NDCG_LOSS and int8.cpu_has_int8_dot()
    expected = "int8" if fast else "auto"  # measured 0.55: over the limit
    assert int8.fastest_dtype("codesift-mini", "cpu") == expected


def test_index_records_the_dtype_and_search_embeds_queries_the_same_way(tmp_path, bert_dir, monkeypatch):
    monkeypatch.setattr(int8, "cpu_has_int8_dot", lambda: True)  # auto picks int8 where VNNI makes it pay
    model = with_int8_record(bert_dir, tmp_path / "model", loss=0.2)
    root = tmp_path / "repo"
    root.mkdir()
    (root / "conf.py").write_text('def parse_config(path):\n    """Read a config file."""\n    return open(path).read()\n')
    (root / "stack.py").write_text("class Stack:\n    def push(self, item):\n        self.items.append(item)\n")
    build_index(root, config=IndexConfig(model=str(model)))
    with open_index(root) as ix:
        assert ix.config.dtype == "int8" and ix.embedder.precision == "int8"
        assert ix.status()["dtype"] == "int8"
        hits = ix.search("parse a config file", limit=2, mode="dense")
        assert {h.path for h in hits} <= {"conf.py", "stack.py"} and hits
    # an update keeps the stored precision; asking for another one is refused
    (root / "more.py").write_text("def more():\n    return 1\n")
    assert build_index(root).chunks_embedded >= 1
    with pytest.raises(ValueError, match="holds int8 vectors, not float32"):
        build_index(root, config=IndexConfig(model=str(model), dtype="float32"))


def test_an_explicit_dtype_wins_over_auto(tmp_path, bert_dir):
    model = with_int8_record(bert_dir, tmp_path / "model", loss=0.2)
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("def a():\n    return 1\n")
    build_index(root, config=IndexConfig(model=str(model), dtype="float32"))
    with open_index(root) as ix:
        assert ix.config.dtype == "float32" and ix.embedder.precision == "float32"


def test_an_index_from_before_dtype_was_stored_keeps_its_precision():
    meta = {"config": {"model": "m"}, "fingerprint": "0123456789abcdef-mean-bfloat16"}
    assert IndexConfig.from_meta(meta).dtype == "bfloat16"
    assert IndexConfig.from_meta({"config": {"model": "m"}}).dtype == "auto"
    assert IndexConfig.from_meta({}) is None
