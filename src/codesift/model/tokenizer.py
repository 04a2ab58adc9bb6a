"""A model's tokenizer with the special tokens its own files ask for, whatever the transformers version.

transformers 4.57 turns SmolLM2's GGUF tokenizer into a ``LlamaTokenizerFast`` that prepends a BOS
token (and takes ``<|im_start|>`` for EOS) although the file says ``tokenizer.ggml.add_bos_token =
false``; 5.x follows the file. Vectors then depend on the installed version. ``load_tokenizer``
reads the model's metadata (``special_token_metadata``) and makes the tokenizer follow it.
"""

from __future__ import annotations

import json
import logging

from codesift.model.loading import ModelSource, SpecialTokenMetadata, special_token_metadata

log = logging.getLogger(__name__)

_PROBE = "a"


def load_tokenizer(src: ModelSource, **kwargs):
    """``AutoTokenizer.from_pretrained`` for ``src``, then ``follow_metadata`` with the model's own flags."""
    from transformers import AutoTokenizer

    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    tokenizer = AutoTokenizer.from_pretrained(src.path, **kwargs)
    follow_metadata(tokenizer, special_token_metadata(src))
    return tokenizer


def special_token_flags(tokenizer) -> tuple[bool, bool]:
    """(prepends BOS, appends EOS): what the tokenizer really does with ``add_special_tokens=True``."""
    ids = tokenizer(_PROBE, add_special_tokens=True)["input_ids"]
    raw = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    start = next((i for i in range(len(ids) - len(raw) + 1) if ids[i:i + len(raw)] == raw), 0)
    head, tail = ids[:start], ids[start + len(raw):]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return bos is not None and bos in head, eos is not None and eos in tail


def follow_metadata(tokenizer, meta: SpecialTokenMetadata) -> None:
    """Make ``tokenizer`` use the special tokens and the BOS/EOS rule that ``meta`` states (in place)."""
    for name, token_id in (("bos_token", meta.bos_id), ("eos_token", meta.eos_id),
                           ("unk_token", meta.unk_id), ("pad_token", meta.pad_id)):
        if token_id is None or not 0 <= token_id < len(tokenizer):
            continue
        token = tokenizer.convert_ids_to_tokens(token_id)
        if getattr(tokenizer, name) != token:
            log.info("tokenizer %s %r -> %r (the model's metadata)", name, getattr(tokenizer, name), token)
            setattr(tokenizer, name, token)
    has = special_token_flags(tokenizer)
    want = (has[0] if meta.add_bos is None else meta.add_bos and tokenizer.bos_token is not None,
            has[1] if meta.add_eos is None else meta.add_eos and tokenizer.eos_token is not None)
    if want != has:
        log.info("tokenizer BOS/EOS (%s, %s) -> (%s, %s) (the model's metadata)", *has, *want)
        if not set_special_token_flags(tokenizer, *want):
            log.warning("cannot make this tokenizer add BOS=%s / EOS=%s as its model asks; vectors may differ "
                        "between transformers versions", *want)
            return
    # transformers keeps its own copy of the flags (4.x Llama tokenizers, 5.x) and rebuilds the
    # post-processor from it on some changes: keep that copy in step without triggering a rebuild.
    for attr, value in (("_add_bos_token", want[0]), ("_add_eos_token", want[1])):
        if hasattr(tokenizer, attr):
            object.__setattr__(tokenizer, attr, value)


def set_special_token_flags(tokenizer, add_bos: bool, add_eos: bool) -> bool:
    """Rewrite a fast tokenizer's post-processor to add exactly BOS/EOS as asked; False if it cannot."""
    from tokenizers import processors

    if not getattr(tokenizer, "is_fast", False):
        return False
    backend = tokenizer.backend_tokenizer
    current = backend.post_processor
    kind = json.loads(current.__getstate__())["type"] if current is not None else None
    if kind not in (None, "TemplateProcessing", "ByteLevel"):
        return False  # e.g. BERT/RoBERTa processors: their CLS/SEP are not ours to rewrite
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    pre = f"{bos}:0 " if add_bos else ""
    post = f" {eos}:0" if add_eos else ""
    pre1 = f"{bos}:1 " if add_bos else ""
    post1 = f" {eos}:1" if add_eos else ""
    specials = {}
    if add_bos:
        specials[bos] = tokenizer.bos_token_id
    if add_eos:
        specials[eos] = tokenizer.eos_token_id
    template = processors.TemplateProcessing(single=f"{pre}$A:0{post}", pair=f"{pre}$A:0{post} {pre1}$B:1{post1}",
                                             special_tokens=list(specials.items()))
    # A ByteLevel post-processor only adjusts offsets; keep it in front of the template.
    backend.post_processor = processors.Sequence([current, template]) if kind == "ByteLevel" else template
    return special_token_flags(tokenizer) == (add_bos, add_eos)
