"""The Embedder: tokenize -> batch by tokens -> forward -> pool -> normalise -> truncate.

One object turns texts into vectors with a code LLM (or any Hugging Face model), applying each
task's instruction prefix for the query or the document side, exactly as the jina-code-embeddings
model cards do: ``prefix + text`` tokenized as one string with the tokenizer's own special tokens,
the hidden state of the last real token, L2-normalised, then Matryoshka truncation (truncate, then
re-normalise).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from codesift.model.device import pick_device, pick_dtype
from codesift.model.inputs import check_text
from codesift.model.loading import (
    CODESIFT_CONFIG,
    ModelSource,
    check_weight_files,
    resolve_model,
    weights_fingerprint,
)
from codesift.model.norm import l2_normalize
from codesift.model.pooling import LatentAttentionPooling, normalize_pooling, pool
from codesift.model.tokenizer import load_tokenizer, special_token_flags
from codesift.tasks import TASKS, TaskRegistry

log = logging.getLogger(__name__)

# Encoder families: no instruction prefixes and mean pooling unless their folder says otherwise.
_ENCODER_TYPES = {
    "bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta", "deberta-v2", "albert",
    "camembert", "modernbert", "nomic_bert", "xlm", "ernie", "t5", "mt5", "bge-m3", "new",
}
# Padded tokens per forward pass. On CPU, small batches keep activations in cache: measured here
# (benchmarks/embed_throughput.py, AVX-512 BF16, 2 cores) 1024 tokens ran 2-3x faster than 8192.
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "cuda": 65536, "mps": 16384}
MAX_BATCH_ROWS = 512
PROGRESS_MIN_TOKENS = 50_000
# Long texts are tokenized only as far as the limit needs: a first window of this many characters per
# allowed token holds more than max_length tokens for any ordinary text (code averages 3-4 characters a
# token). A window that holds too few (long runs of whitespace) grows 4x at a time, so a 5 MB input
# costs a few milliseconds, not seconds and gigabytes. The margin keeps a cut inside a word from
# changing the tokens that are kept.
PROBE_CHARS_PER_TOKEN = 8
PROBE_MARGIN_TOKENS = 16


class InputTooLongError(ValueError):
    """An input is longer than ``max_length`` tokens and ``truncate=False``."""


@dataclass(frozen=True)
class _Batch:
    order: list[int]   # positions in the caller's list
    width: int         # padded length


def default_matryoshka_dims(dimension: int) -> tuple[int, ...]:
    """Powers of two from 64 below ``dimension``, then ``dimension`` (the paper's 0.5B: 64..512, 896)."""
    dims = [d for d in (64, 128, 256, 512, 1024, 2048, 4096) if d < dimension]
    return tuple(dims + [dimension])


class Embedder:
    """A code LLM (or any Hugging Face model) as a task-aware embedding model (the ``model.encoder.Encoder`` protocol)."""

    def __init__(
        self,
        model: str | os.PathLike | None = None,  # None: loading.default_model() (codesift-mini on a CPU)
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        max_length: int = 8192,
        *,
        pooling: str | None = None,
        prompts: bool | dict[str, str] | None = None,
        allow_fallback: bool | None = None,
        tasks: TaskRegistry | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoConfig, AutoModel

        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
        self.source: ModelSource = resolve_model(model, allow_fallback=allow_fallback)
        self.device = pick_device(device)
        int8 = isinstance(dtype, str) and dtype == "int8"  # ONNX Runtime (model/int8.py) runs the forward pass
        self.dtype = torch.float32 if int8 else pick_dtype(dtype, self.device)  # int8: the torch module it exports
        self.tasks = tasks or TASKS
        src = self.source
        load_kw: dict = {"trust_remote_code": trust_remote_code}
        if src.gguf_file:
            load_kw["gguf_file"] = src.gguf_file
        check_weight_files(src)  # unreadable or cut-short weights: named here, not a loader traceback
        self.tokenizer = load_tokenizer(src, trust_remote_code=trust_remote_code)  # BOS/EOS as the model says
        config = AutoConfig.from_pretrained(src.path, **load_kw)
        self.is_decoder = _is_decoder(config)
        if int8:
            from codesift.model.int8 import check_int8_supported

            check_int8_supported(self.is_decoder, self.device)
        self.model = AutoModel.from_pretrained(src.path, dtype=self.dtype, **load_kw)
        if src.gguf_file:
            _drop_gguf_quantizer(self.model)
        self.model.to(self.device).eval()

        # Padding: decoders pad on the left (as the published models do); last-token pooling is correct either way.
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.is_decoder:
            self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "right"  # a cut drops the end of the text, never the prefix
        # The int8 path's ONNX Runtime session (None: the torch module runs the forward pass).
        self.engine = self._int8_engine() if int8 else None

        limits = [max_length, src.max_seq_length, getattr(config, "max_position_embeddings", None)]
        self.max_length = int(min(x for x in limits if x))
        if src.max_seq_length and max_length > src.max_seq_length:
            log.info("max_length %d capped at the model's max_seq_length %d", max_length, src.max_seq_length)

        self.pooling = normalize_pooling(pooling or src.pooling or ("lasttoken" if self.is_decoder else "mean"))
        self.pooling_module: torch.nn.Module | None = None
        if self.pooling == "latent_attention":
            self.pooling_module = self._latent_pooler(config)

        self._prompts_mode = prompts
        self.prompts: dict[str, str] = dict(prompts) if isinstance(prompts, dict) else dict(src.prompts)
        self.dimension = int(config.hidden_size)
        self.matryoshka_dims: tuple[int, ...] = tuple(src.matryoshka_dims or default_matryoshka_dims(self.dimension))
        self.appends_eos = self._detect_appended_eos()
        self._fingerprint: str | None = None
        self._overhead: dict[str, int] = {}  # prefix -> tokens it and the special tokens add (token_spans)
        # Reuse the instruction prefix's key/value states across a call's texts (decoders, last-token
        # pooling: causal attention makes them independent of the text, and pooling never reads them).
        self.prefix_cache = True
        # encode() runs under torch.inference_mode; an FSDP-sharded model needs no_grad instead (its
        # all-gather buffers are reused by training steps, and inference tensors cannot be).
        self.inference_mode = True

    # ---------------------------------------------------------------- properties and small helpers
    @property
    def fingerprint(self) -> str:
        """A stable id of weights + pooling + precision (int8: with its export recipe), for embedding caches."""
        if self._fingerprint is None:
            precision = self.precision
            if self.engine is not None:
                from codesift.model.int8 import RECIPE

                precision = f"int8.{RECIPE}"
            self._fingerprint = "-".join([weights_fingerprint(self.source), self.pooling, precision])
        return self._fingerprint

    @property
    def precision(self) -> str:
        """What runs the forward pass: ``int8`` (ONNX Runtime), else the torch dtype's name (``bfloat16``, ...)."""
        return "int8" if self.engine is not None else str(self.dtype).replace("torch.", "")

    @property
    def name(self) -> str:
        return self.source.name

    def uses_prefixes(self) -> bool:
        """Whether task instruction prefixes are applied (decoders and prompt-configured models)."""
        if self._prompts_mode is False:
            return False
        return bool(self._prompts_mode) or bool(self.prompts) or self.is_decoder

    def prefix(self, task: str = "nl2code", role: str | None = "query") -> str:
        """The instruction prefix this model uses for ``task`` and ``role`` ('' for plain encoders).

        A role inside the task name (``nl2code.passage``) wins over the default ``role="query"``;
        an explicit conflicting role (``nl2code.query`` with ``role="document"``) is an error.
        """
        if role == "query" and self.tasks.split(task)[1]:
            role = None
        t, r = self.tasks.resolve(task, role)
        if not self.uses_prefixes():
            return ""
        return self.prompts.get(f"{t.name}_{r}", t.prefix(r))

    def _detect_appended_eos(self) -> bool:
        appended = special_token_flags(self.tokenizer)[1]
        log.info("tokenizer of %s %s an EOS token", self.name, "appends" if appended else "does not append")
        return appended

    def _int8_engine(self):
        """The ONNX Runtime session of this model's int8 export (exported once, then read from the cache)."""
        from codesift.model.int8 import OnnxBackbone, cached_int8_model

        takes_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        return OnnxBackbone(cached_int8_model(self.model, weights_fingerprint(self.source), takes_types))

    def _latent_pooler(self, config) -> torch.nn.Module:
        if self.source.pooling_module_dir is not None:
            from codesift.model.st_modules import LatentAttentionPooling as STLatent

            pooler = STLatent.load(str(self.source.pooling_module_dir)).pooler
        else:
            pooler = LatentAttentionPooling(int(config.hidden_size))
        return pooler.to(self.device, dtype=self.dtype).eval()

    # ---------------------------------------------------------------- tokenization
    def _token_ids(self, texts: Sequence[str], prefix: str, truncate: bool) -> list[list[int]]:
        if isinstance(texts, str):
            # ValueError, not TypeError: the server answers it with a 400
            raise ValueError("texts must be a list of strings, not one string: wrap it as [text]")  # noqa: TRY004
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}] is {type(t).__name__}, not str")  # noqa: TRY004 (the server's 400)
            check_text(t, f"texts[{i}]")
        ids, used = _bounded_token_ids(self.tokenizer, prefix, texts, self.max_length)
        too_long = [i for i, row in enumerate(ids) if len(row) > self.max_length]
        if too_long and not truncate:
            i = too_long[0]
            more = f" (and {len(too_long) - 1} more)" if len(too_long) > 1 else ""
            size = f"{len(ids[i])}" if len(used[i]) == len(texts[i]) else f"more than {len(ids[i])}"
            raise InputTooLongError(
                f"input {i} is {size} tokens, over max_length={self.max_length}{more}; "
                "pass truncate=True to cut the text (the instruction prefix is kept) or split the input"
            )
        if too_long:
            prefix_len = len(self.tokenizer(prefix, add_special_tokens=True)["input_ids"]) if prefix else 0
            if prefix_len >= self.max_length:
                raise ValueError(f"max_length={self.max_length} leaves no room for the {prefix_len}-token prefix")
            cut = self.tokenizer([prefix + used[i] for i in too_long], add_special_tokens=True, truncation=True,
                                 max_length=self.max_length)["input_ids"]
            for i, row in zip(too_long, cut):
                ids[i] = row
        return ids

    def count_tokens(self, texts: Sequence[str], task: str = "nl2code", role: str | None = "query") -> list[int]:
        """Token count of each text with its prefix and special tokens (before any truncation).

        Past ``max_length`` the count is a lower bound (still over ``max_length``): long texts are
        tokenized only far enough to know they are too long.
        """
        return _count_tokens(self.tokenizer, self.prefix(task, role), texts, self.max_length)

    def token_spans(self, text: str, task: str = "nl2code",
                    role: str | None = "query") -> tuple[list[tuple[int, int]], int] | None:
        """``text`` tokenized once: each token's character span, and the tokens its prefix and special tokens add.

        The two give any piece of ``text`` an approximate count without tokenizing it again (the
        indexer's chunker); None where the tokenizer has no offsets (a slow, Python tokenizer).
        """
        if not getattr(self.tokenizer, "is_fast", False):
            return None
        enc = self.tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True,
                             verbose=False)
        prefix = self.prefix(task, role)
        if prefix not in self._overhead:
            self._overhead[prefix] = _count_tokens(self.tokenizer, prefix, [""], self.max_length)[0]
        return [tuple(span) for span in enc["offset_mapping"]], self._overhead[prefix]

    def token_counter(self) -> TokenCounter:
        """A ``count_tokens`` with its own tokenizer copy, safe to call from one other thread (e.g. a server's)."""
        return TokenCounter(self)

    def _pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        left = self.tokenizer.padding_side == "left"
        for j, row in enumerate(rows):
            n = len(row)
            if left:
                ids[j, width - n:] = torch.tensor(row)
                mask[j, width - n:] = 1
            else:
                ids[j, :n] = torch.tensor(row)
                mask[j, :n] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def tokenize(self, texts: Sequence[str], task: str = "nl2code", role: str | None = "query",
                 truncate: bool = True) -> dict[str, torch.Tensor]:
        """Padded model inputs for ``texts`` with the task's prefix applied (for training loops)."""
        return self._pad(self._token_ids(texts, self.prefix(task, role), truncate))

    # ---------------------------------------------------------------- forward
    def embed_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled, un-normalised embeddings (B, D) of tokenized inputs; differentiable (not on the int8 path)."""
        kw = {"input_ids": features["input_ids"], "attention_mask": features["attention_mask"]}
        if "token_type_ids" in features:
            kw["token_type_ids"] = features["token_type_ids"]
        elif not self.is_decoder and "token_type_ids" in getattr(self.tokenizer, "model_input_names", ()):
            kw["token_type_ids"] = torch.zeros_like(features["input_ids"])
        hidden = self.engine(**kw) if self.engine is not None else self.model(**kw).last_hidden_state
        return pool(hidden, features["attention_mask"], self.pooling, self.pooling_module)

    def _plan_batches(self, lengths: list[int], batch_tokens: int) -> list[_Batch]:
        """Sort by token length (longest first) and cut batches whose PADDED size fits the budget."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[_Batch] = []
        current: list[int] = []
        width = 0
        for i in order:
            w = max(width, lengths[i])
            if current and (w * (len(current) + 1) > batch_tokens or len(current) >= MAX_BATCH_ROWS):
                batches.append(_Batch(current, width))
                current, w = [], lengths[i]
            current.append(i)
            width = w
        if current:
            batches.append(_Batch(current, width))
        return batches

    def encode(
        self,
        texts: Sequence[str],
        task: str = "nl2code",
        role: str | None = "query",
        dim: int | None = None,
        normalize: bool = True,
        truncate: bool = False,
        batch_tokens: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` as ``role`` of ``task``: an (n, d) float32 array in the caller's order."""
        dim = self._check_dim(dim)
        prefix = self.prefix(task, role)
        texts = list(texts) if not isinstance(texts, str) else texts
        out_dim = dim or self.dimension
        if len(texts) == 0:
            return np.zeros((0, out_dim), dtype=np.float32)
        ids = self._token_ids(texts, prefix, truncate)
        budget = int(batch_tokens if batch_tokens is not None else DEFAULT_BATCH_TOKENS.get(self.device.type, 8192))
        if budget < 1:
            raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
        prefix_ids = self._cacheable_prefix_ids(prefix)
        n_prefix = len(prefix_ids)
        # Texts whose tokens start with the prefix's own tokens go through the prefix cache (their tail only).
        tails = {i: row[n_prefix:] for i, row in enumerate(ids)
                 if n_prefix and len(row) > n_prefix and row[:n_prefix] == prefix_ids}
        plain = [i for i in range(len(ids)) if i not in tails]
        result = np.empty((len(texts), self.dimension), dtype=np.float32)
        total = sum(len(r) for r in ids)
        if show_progress is None:
            show_progress = sys.stderr.isatty() and total >= PROGRESS_MIN_TOKENS
        progress = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=total, unit="tok", unit_scale=True, desc="embedding")
        with torch.inference_mode() if self.inference_mode else torch.no_grad():
            prefix_states = self._prefix_states(prefix_ids) if tails else None
            for group, rows, budget_rows in ((plain, {i: ids[i] for i in plain}, None),
                                             (list(tails), tails, n_prefix)):
                if not group:
                    continue
                lengths = [len(rows[i]) + (budget_rows or 0) for i in group]
                for batch in self._plan_batches(lengths, budget):
                    order = [group[j] for j in batch.order]
                    if budget_rows is None:
                        vecs = self.embed_features(self._pad([rows[i] for i in order]))
                    else:
                        vecs = self._embed_after_prefix([rows[i] for i in order], prefix_states, n_prefix)
                    result[order] = vecs.float().cpu().numpy()
                    if progress is not None:
                        progress.update(sum(len(ids[i]) for i in order))
        if progress is not None:
            progress.close()
        return finish_vectors(result, dim, normalize)

    def _cacheable_prefix_ids(self, prefix: str) -> list[int]:
        """The prefix's token ids when its key/value states can be reused, else []."""
        if not (self.prefix_cache and prefix and self.is_decoder and self.pooling == "lasttoken"):
            return []
        ids = self.tokenizer(prefix, add_special_tokens=True)["input_ids"]
        if self.appends_eos and ids and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]
        return ids

    def _prefix_states(self, prefix_ids: list[int]):
        """Key/value cache of the prefix alone (computed once per encode call, so never stale)."""
        out = self.model(input_ids=torch.tensor([prefix_ids], device=self.device), use_cache=True)
        return out[self._cache_name]

    @cached_property
    def _cache_name(self) -> str:
        """The key/value cache's keyword: ``cache`` from transformers 5.2x on, ``past_key_values`` before."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _embed_after_prefix(self, tails: list[list[int]], prefix_states, n_prefix: int) -> torch.Tensor:
        """Last-token states of ``prefix + tail`` rows, running only the tails over the cached prefix."""
        import copy

        width = max(len(t) for t in tails)
        ids = torch.full((len(tails), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(tails), width + n_prefix), dtype=torch.long)
        mask[:, :n_prefix] = 1
        for j, row in enumerate(tails):  # right padding: positions continue after the prefix
            ids[j, : len(row)] = torch.tensor(row)
            mask[j, n_prefix : n_prefix + len(row)] = 1
        cache = copy.deepcopy(prefix_states)
        cache.batch_repeat_interleave(len(tails))
        hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            use_cache=True, **{self._cache_name: cache}).last_hidden_state
        last = torch.tensor([len(t) - 1 for t in tails], device=self.device)
        return hidden[torch.arange(len(tails), device=self.device), last]

    def _check_dim(self, dim: int | None) -> int | None:
        if dim is None:
            return None
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= int(dim) <= self.dimension:
            raise ValueError(
                f"dim must be an integer between 1 and {self.dimension}, got {dim!r}; "
                f"this model was trained for Matryoshka dims {list(self.matryoshka_dims)}"
            )
        if int(dim) not in self.matryoshka_dims:
            log.warning("dim %d is not one of the Matryoshka dims %s; quality may drop", dim, self.matryoshka_dims)
        return int(dim)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix between the rows of ``a`` and ``b``."""
        a = np.atleast_2d(np.asarray(a, dtype=np.float32))
        b = np.atleast_2d(np.asarray(b, dtype=np.float32))
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"vectors have different dims: {a.shape[1]} vs {b.shape[1]}")
        return l2_normalize(a) @ l2_normalize(b).T

    # ---------------------------------------------------------------- saving
    def save(self, out_dir: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write a sentence-transformers folder (weights, tokenizer, pooling, the ten prompts) and return it.

        ``state_dict`` replaces the backbone's own weights (a sharded model's gathered full state).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, state_dict=state_dict)
        self.tokenizer.save_pretrained(out)
        _write_special_token_flags(out, self.tokenizer, always=self.source.layout == "gguf")
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
        if self.pooling == "latent_attention":
            from codesift.model.st_modules import LatentAttentionPooling as STLatent

            (out / "1_LatentAttentionPooling").mkdir(exist_ok=True)
            STLatent.from_pooler(self.pooling_module).save(str(out / "1_LatentAttentionPooling"))
            modules.append({"idx": 1, "name": "1", "path": "1_LatentAttentionPooling",
                            "type": "codesift.model.st_modules.LatentAttentionPooling"})
        else:
            (out / "1_Pooling").mkdir(exist_ok=True)
            pool_cfg = {"word_embedding_dimension": self.dimension, "pooling_mode_cls_token": self.pooling == "cls",
                        "pooling_mode_mean_tokens": self.pooling == "mean", "pooling_mode_max_tokens": self.pooling == "max",
                        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
                        "pooling_mode_lasttoken": self.pooling == "lasttoken", "include_prompt": True}
            _write_json(out / "1_Pooling" / "config.json", pool_cfg)
            modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
        (out / "2_Normalize").mkdir(exist_ok=True)
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        _write_json(out / "modules.json", modules)
        _write_json(out / "sentence_bert_config.json", {"max_seq_length": self.max_length, "do_lower_case": False})
        prompts = {}
        if self.uses_prefixes():
            for name in self.tasks.names():
                for role in ("query", "document"):
                    prompts[f"{name}_{role}"] = self.prefix(name, role)
        _write_json(out / "config_sentence_transformers.json",
                    {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"})
        _write_json(out / CODESIFT_CONFIG, {"matryoshka_dims": list(self.matryoshka_dims), "pooling": self.pooling,
                                            "appends_eos": self.appends_eos, "source": self.name})
        return out

    def __repr__(self) -> str:
        return (f"Embedder({self.name!r}, device={self.device.type}, dtype={self.precision}, "
                f"dim={self.dimension}, pooling={self.pooling}, max_length={self.max_length})")


def _write_special_token_flags(out: Path, tokenizer, always: bool) -> None:
    """State in the saved tokenizer_config.json the BOS/EOS rule the tokenizer really follows.

    transformers may save the flags it was built with rather than the ones in effect (4.57 writes
    ``add_bos_token: true`` for a GGUF that says false), and a reload would follow them. Keys already
    there are corrected; ``always`` adds them (GGUF sources, whose rule lives in the .gguf file).
    """
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for key, value in zip(("add_bos_token", "add_eos_token"), special_token_flags(tokenizer)):
        if always or key in cfg:
            cfg[key] = value
    _write_json(path, cfg)


class TokenCounter:
    """Counts tokens like ``Embedder.count_tokens`` on a private tokenizer copy.

    Fast tokenizers are not safe to use from two threads at once (their truncation state is shared),
    so a server that counts tokens while the engine thread tokenizes a batch needs its own copy.
    """

    def __init__(self, embedder: Embedder) -> None:
        import copy

        self._tokenizer = copy.deepcopy(embedder.tokenizer)
        self._prefix = embedder.prefix
        self._max_length = embedder.max_length

    def __call__(self, texts: Sequence[str], task: str = "nl2code", role: str | None = "query") -> list[int]:
        return _count_tokens(self._tokenizer, self._prefix(task, role), texts, self._max_length)


def _count_tokens(tokenizer, prefix: str, texts: Sequence[str], max_length: int) -> list[int]:
    """Token count of ``prefix + text`` with the tokenizer's special tokens; a lower bound past ``max_length``."""
    for i, t in enumerate(texts):
        check_text(t, f"texts[{i}]")
    return [len(row) for row in _bounded_token_ids(tokenizer, prefix, texts, max_length)[0]]


def _bounded_token_ids(tokenizer, prefix: str, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[str]]:
    """Ids of ``prefix + text`` for each text, tokenizing only a window of each long text (no truncation).

    Returns (ids, used): ``used[i]`` is the part of ``texts[i]`` that was tokenized. When it is shorter
    than the text, ``ids[i]`` holds more than ``max_length`` tokens (a lower bound of the text's count)
    and truncating ``prefix + used[i]`` gives the same ids as truncating the whole text.
    """
    ids: list[list[int]] = [[] for _ in texts]
    used = list(texts)
    window = max_length * PROBE_CHARS_PER_TOKEN
    todo = list(range(len(texts)))
    while todo:
        cuts = [_cut_chars(texts[i], window) for i in todo]
        rows = tokenizer([prefix + c for c in cuts], add_special_tokens=True, truncation=False,
                         verbose=False)["input_ids"]
        again = []
        for i, cut, row in zip(todo, cuts, rows):
            if len(cut) == len(texts[i]) or len(row) > max_length + PROBE_MARGIN_TOKENS:
                ids[i], used[i] = row, cut
            else:
                again.append(i)
        todo, window = again, window * 4
    return ids, used


def _cut_chars(text: str, n: int) -> str:
    """The first ``n`` characters of ``text``, ending at a space or newline near the cut when there is one."""
    if len(text) <= n:
        return text
    space = max(text.rfind(" ", n - 256, n), text.rfind("\n", n - 256, n))
    return text[:space] if space > 0 else text[:n]


def finish_vectors(vectors: np.ndarray, dim: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka-truncate to ``dim`` and L2-normalise (truncate first, then normalise)."""
    if dim is not None:
        vectors = vectors[:, :dim]
    if normalize:
        vectors = l2_normalize(vectors)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _is_decoder(config) -> bool:
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "CausalLM" in archs:
        return True
    if getattr(config, "is_encoder_decoder", False):
        return False
    return config.model_type not in _ENCODER_TYPES


def _drop_gguf_quantizer(model) -> None:
    """GGUF weights are dequantized on load; forget the quantizer so the model saves as plain safetensors."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")


__all__ = ["Embedder", "InputTooLongError", "TokenCounter", "finish_vectors"]
