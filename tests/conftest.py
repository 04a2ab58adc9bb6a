"""Shared fixtures: tiny random models and tokenizers built inside the tests (offline, fast)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CODESIFT_QUERY_SERVER", "0")  # CLI tests search in-process; query-server tests turn it on

from pathlib import Path

import pytest

from codesift.testing import make_tiny_bert, make_tiny_decoder


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    """A Hugging Face folder holding a tiny random Qwen2 model and a small byte-level BPE tokenizer."""
    return make_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="session")
def tiny_qwen_eos_dir(tmp_path_factory) -> Path:
    """Like ``tiny_qwen_dir`` but its tokenizer appends an EOS token (as some decoder tokenizers do)."""
    return make_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen-eos"), append_eos=True)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A sentence-transformers folder with a tiny random BERT encoder and mean pooling."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster (2 CPUs) for one test module; its workers import this checkout's codesift."""
    import codesift

    ray = pytest.importorskip("ray")  # the optional extra: pip install 'codesift[ray]'
    src = str(Path(codesift.__file__).resolve().parents[1])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([src, old] if old else [src])
    # Ray kills a worker that has not registered within 60 s; on a loaded machine importing ray takes longer.
    os.environ.setdefault("RAY_worker_register_timeout_seconds", "600")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture
def bm25_index(tmp_path, monkeypatch):
    """An index of test_index_ranking's REPO built with a stand-in model, its query server enabled (it answers
    BM25 without a model); (root, index folder). The server is stopped afterwards."""
    from codesift.index import IndexConfig, build_index, daemon_client
    from test_index_ranking import REPO, BagOfWords, make_repo

    monkeypatch.setenv(daemon_client.ENABLE_ENV, "1")
    root = tmp_path / "repo"
    make_repo(root, REPO)
    build_index(root, config=IndexConfig(model="bag-of-words"), embedder=BagOfWords())
    yield root, root / ".codesift"
    daemon_client.stop(root / ".codesift")
