"""codesift-mini: the code model that ships inside codesift, loaded by name, the default on CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from codesift.model import loading, shipped
from codesift.model.embedder import Embedder

FOLDER = shipped.SHIPPED_ROOT / "codesift-mini"


@pytest.fixture(scope="module")
def mini() -> Embedder:
    return Embedder("codesift-mini", device="cpu", dtype="float32")


def test_it_loads_by_name_with_task_prefixes_and_matryoshka_dims(mini):
    assert mini.source.path == FOLDER.resolve() and mini.name == "codesift-mini"
    assert mini.dimension == 384 and mini.matryoshka_dims == (64, 128, 256, 384)
    assert mini.pooling == "mean" and mini.max_length == 256
    assert mini.prefix("nl2code", "query").startswith("Find the most relevant code snippet")
    assert mini.prefix("qa", "document") != mini.prefix("qa", "query")
    assert loading.canonical_model_name("offline") == "codesift-mini"
    assert loading.canonical_model_name("codesift/codesift-mini") == "codesift-mini"
    assert loading.resolve_model("offline").path == FOLDER.resolve()


def test_it_retrieves_code_for_a_description(mini):
    docs = ["def load_config(path):\n    with open(path) as f:\n        return json.load(f)",
            "def mean(xs):\n    return sum(xs) / len(xs)",
            "SELECT name FROM singer WHERE age > 30",
            "class Stack:\n    def push(self, x):\n        self.items.append(x)"]
    queries = ["read a JSON file into a dict", "average of a list of numbers",
               "names of singers older than 30", "a last-in first-out container"]
    q = mini.encode(queries, task="nl2code", role="query")
    d = mini.encode(docs, task="nl2code", role="document")
    assert list((q @ d.T).argmax(axis=1)) == [0, 1, 2, 3]


def test_sentence_transformers_gives_the_same_vectors(mini):
    from sentence_transformers import SentenceTransformer

    texts = ["def add(a, b):\n    return a + b", "parse a date string"]
    st = SentenceTransformer(str(FOLDER), device="cpu")
    w = st.encode(texts, prompt_name="nl2code_document", normalize_embeddings=True)
    v = mini.encode(texts, task="nl2code", role="document")
    assert np.abs(v - w).max() < 1e-4


def test_default_model_is_codesift_mini_on_cpu_and_without_the_hub(monkeypatch):
    monkeypatch.delenv(loading.MODEL_ENV, raising=False)
    monkeypatch.setattr(loading, "has_gpu", lambda: False)
    assert loading.default_model() == "codesift-mini"
    monkeypatch.setattr(loading, "has_gpu", lambda: True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "_in_hub_cache", lambda repo: False)
    assert loading.default_model() == "codesift-mini"  # a GPU machine that cannot get the paper's model
    monkeypatch.setattr(loading, "_in_hub_cache", lambda repo: True)
    assert loading.default_model() == loading.DEFAULT_MODEL
    monkeypatch.setenv(loading.MODEL_ENV, "some/model")
    assert loading.default_model() == "some/model"


def test_fallback_from_an_unreachable_hub_model_is_codesift_mini(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(loading.ModelNotAvailableError, match="codesift-mini"):
        loading.resolve_model("someone/not-cached-model", allow_fallback=False)
    assert loading.resolve_model("someone/not-cached-model", allow_fallback=True).path == FOLDER.resolve()


def test_the_folder_is_small_and_has_a_card():
    size = sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file())
    assert size < 50e6
    card = (FOLDER / "README.md").read_text()
    for needed in ("license: apache-2.0", "Base model", "Training data", "Scores", "Recipe", "Use"):
        assert needed in card, needed


def test_codesift_models_lists_it(monkeypatch):
    out = subprocess.run([sys.executable, "-m", "codesift.cli", "models", "--json"], check=False, capture_output=True,
                         text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert "codesift-mini" in rows and rows["codesift-mini"]["path"] == str(FOLDER.resolve())
