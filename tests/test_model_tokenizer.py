"""BOS/EOS follow the model's own metadata (GGUF flags, tokenizer_config.json), whatever transformers does."""

import json

import pytest
from tokenizers import processors

from codesift.model.loading import SpecialTokenMetadata, describe_local, special_token_metadata
from codesift.model.tokenizer import follow_metadata, load_tokenizer, special_token_flags
from codesift.testing import make_tiny_gguf, make_tokenizer

pytest.importorskip("gguf")


def _tokenizer(add_bos: bool = False, add_eos: bool = False):
    """make_tokenizer() with a BOS token, whose post-processor adds BOS/EOS as asked (as transformers 4.57 does)."""
    tok = make_tokenizer()
    tok.bos_token = "<|im_start|>"
    bos, eos = tok.bos_token, tok.eos_token
    single = ("<|im_start|> " if add_bos else "") + "$A" + (" <|endoftext|>" if add_eos else "")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(bos, tok.bos_token_id), (eos, tok.eos_token_id)])
    return tok


@pytest.mark.parametrize("has", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("want", [(False, False), (True, False), (False, True), (True, True)])
def test_follow_metadata_sets_exactly_the_flags_asked(has, want):
    tok = _tokenizer(*has)
    assert special_token_flags(tok) == has
    raw = tok("def add", add_special_tokens=False)["input_ids"]
    follow_metadata(tok, SpecialTokenMetadata(add_bos=want[0], add_eos=want[1]))
    assert special_token_flags(tok) == want
    expected = [tok.bos_token_id] * want[0] + raw + [tok.eos_token_id] * want[1]
    assert tok("def add")["input_ids"] == expected
    # pairs too, and batches with padding keep working
    assert tok(["x", "def add"], padding=True)["input_ids"][1] == expected


def test_follow_metadata_leaves_unstated_flags_alone():
    tok = _tokenizer(add_bos=True)
    follow_metadata(tok, SpecialTokenMetadata(add_eos=True))
    assert special_token_flags(tok) == (True, True)
    follow_metadata(tok, SpecialTokenMetadata())
    assert special_token_flags(tok) == (True, True)


def test_follow_metadata_keeps_byte_level_offsets():
    tok = make_tokenizer()  # ByteLevel post-processor (offsets), no BOS
    tok.bos_token = "<|im_start|>"
    before = tok("  def add", return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    follow_metadata(tok, SpecialTokenMetadata(add_bos=True))
    enc = tok("  def add", return_offsets_mapping=True)
    assert enc["input_ids"][0] == tok.bos_token_id
    assert enc["offset_mapping"][1:] == before


def test_follow_metadata_takes_special_token_ids():
    tok = _tokenizer()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    follow_metadata(tok, SpecialTokenMetadata(add_eos=True, eos_id=im_end, pad_id=im_end))
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    assert tok("x")["input_ids"][-1] == im_end


@pytest.mark.parametrize("add_bos", [False, True])
def test_gguf_flags_are_read_and_followed(tmp_path, add_bos):
    path = make_tiny_gguf(tmp_path / "tiny.gguf", add_bos=add_bos, add_eos=False)
    src = describe_local(path, str(path))
    meta = special_token_metadata(src)
    assert (meta.add_bos, meta.add_eos) == (add_bos, False)
    tok = load_tokenizer(src)
    assert special_token_flags(tok) == (add_bos, False)
    assert tok.bos_token == "<|im_start|>" and tok.eos_token == "<|im_end|>"  # the ids the file names
    ids = tok("def add")["input_ids"]
    assert (ids[0] == tok.bos_token_id) == add_bos


def test_gguf_without_eos_flag_says_nothing(tmp_path):
    path = make_tiny_gguf(tmp_path / "tiny.gguf", add_bos=False)
    assert special_token_metadata(describe_local(path, str(path))).add_eos is None


def test_hf_folder_flags_come_from_tokenizer_config(tmp_path):
    tok = _tokenizer()
    tok.save_pretrained(tmp_path)
    cfg_path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("add_bos_token", None)
    cfg.update(add_eos_token=True)
    cfg_path.write_text(json.dumps(cfg))
    (tmp_path / "config.json").write_text("{}")
    meta = special_token_metadata(describe_local(tmp_path, str(tmp_path)))
    assert meta == SpecialTokenMetadata(add_bos=None, add_eos=True)


def test_embedder_follows_and_saves_the_flags(tmp_path):
    import numpy as np

    from codesift import Embedder
    from codesift.testing import make_tiny_decoder

    folder = make_tiny_decoder(tmp_path / "tiny")
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(bos_token="<|im_start|>", add_bos_token=True)
    cfg_path.write_text(json.dumps(cfg))
    emb = Embedder(str(folder), device="cpu", dtype="float32")
    assert special_token_flags(emb.tokenizer) == (True, False)
    assert emb.tokenize(["def add"], task="nl2code", role="query")["input_ids"][0, 0] == emb.tokenizer.bos_token_id
    saved = emb.save(tmp_path / "saved")
    again = Embedder(str(saved), device="cpu", dtype="float32")
    assert special_token_flags(again.tokenizer) == (True, False)
    texts = ["def add(a, b):\n    return a + b", "print hello"]
    assert np.abs(again.encode(texts) - emb.encode(texts)).max() <= 1e-5
