"""The indexer's chunks fit the model: counted as the model sees them (prefix, special tokens), capped at its limit."""

from __future__ import annotations

import pytest

from codesift.data.chunking import chunk_text
from codesift.index import IndexConfig
from codesift.index.indexer import DocumentTokens, Indexer

BIG = "def huge(offset):\n" + "".join(f"    value_{i} = compute(value_{i}, {i}) + offset\n" for i in range(200)) + \
    "    return offset\n\n\nclass Stack:\n    def push(self, item):\n        self.items.append(item)\n"


@pytest.fixture(scope="module")
def emb(tiny_qwen_eos_dir):
    from codesift.model.embedder import Embedder

    return Embedder(str(tiny_qwen_eos_dir), max_length=48)  # appends an EOS: one more special token


def test_document_tokens_match_the_embedder(emb):
    counter = DocumentTokens(emb)
    spans = counter.spans(BIG)
    assert spans.overhead == emb.count_tokens([""], task="nl2code", role="document")[0] > 1
    # count_tokens stops early past max_length (a lower bound), so count the whole text with the tokenizer
    exact = len(emb.tokenizer(emb.prefix("nl2code", "document") + BIG, add_special_tokens=True)["input_ids"])
    assert exact <= spans.count(0, len(BIG)) <= exact + 2 * spans.edge_slack + 1


def test_chunks_never_exceed_the_model_limit(tmp_path, emb):
    ix = Indexer(tmp_path, index_dir=tmp_path / "ix", config=IndexConfig(model="tiny", max_tokens=512), embedder=emb)
    assert ix.chunk_limit() == 48  # the model's limit, under the configured 512
    chunks = chunk_text(BIG, "big.py", "python", max_tokens=ix.chunk_limit(), counter=DocumentTokens(emb))
    assert len(chunks) > 5
    assert max(emb.count_tokens([c.text for c in chunks], task="nl2code", role="document")) <= 48
    ix.close()
