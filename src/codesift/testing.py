"""Tiny random models and tokenizers, for tests and examples that must run offline in seconds."""

from __future__ import annotations

import json
from pathlib import Path

_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "print('Hello World!')\n",
    "int arr[5] = {0, 0, 0, 0, 0};\n",
    "Find the most relevant code snippet given the following query:\n",
    "Candidate code snippet:\nCandidate answer:\nCandidate comment:\nCandidate completion:\n",
    "Find an equivalent code snippet given the following code snippet:\n",
    "Find the most relevant comment given the following code snippet:\n",
    "Find the most relevant answer given the following question:\n",
    "Find the most relevant completion given the following start of code snippet:\n",
    "print hello world in python\ninitialize array of 5 zeros in c++\n",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "for (int i = 0; i < n; i++) { sum += x[i]; }\n",
    "SELECT name, age FROM users WHERE age > 30 ORDER BY age DESC;\n",
    "function fetchData(url) { return fetch(url).then(r => r.json()); }\n",
    "import numpy as np\nx = np.zeros((3, 4))\n",
]


def make_tokenizer(vocab_size: int = 512, append_eos: bool = False, padding_side: str = "left"):
    """A byte-level BPE tokenizer trained on a few lines of code (Qwen-like special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    eos = "<|endoftext|>"
    if append_eos:
        eos_id = tok.token_to_id(eos)
        tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, eos_id)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token=eos, padding_side=padding_side, model_max_length=32768
    )


def make_tiny_gguf(out: str | Path, add_bos: bool, add_eos: bool | None = None) -> Path:
    """Write a .gguf file holding ``make_tokenizer``'s vocabulary (llama metadata, GPT-2 BPE) and return its path.

    It carries one zero tensor: enough for transformers to load its tokenizer and config, not a model.
    """
    import gguf
    import numpy as np

    out = Path(out)
    state = json.loads(make_tokenizer().backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(16)
    writer.add_block_count(1)
    writer.add_feed_forward_length(32)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])  # 3: control (special) token
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|endoftext|>"])
    writer.add_add_bos_token(add_bos)
    if add_eos is not None:
        writer.add_add_eos_token(add_eos)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def make_tiny_decoder(out: str | Path, append_eos: bool = False, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a tiny random Qwen2 model + tokenizer as a Hugging Face folder and return its path."""
    import torch
    from transformers import Qwen2Config, Qwen2Model

    out = Path(out)
    tokenizer = make_tokenizer(append_eos=append_eos)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2Model(config).eval()
    # Random init is tiny (std 0.02); scale weights up so vectors differ clearly between inputs.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(10.0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_bert(out: str | Path, hidden_size: int = 32, seed: int = 0) -> Path:
    """Save a tiny random BERT as a sentence-transformers folder with mean pooling; return its path."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = Path(out)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_CORPUS * 4, trainer=trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=512,
    )
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=2 * hidden_size, max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden_size, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False,
         "pooling_mode_max_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True}))
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (out / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {}, "default_prompt_name": None,
                                                                       "similarity_fn_name": "cosine"}))
    return out


class StandInEncoder:
    """The plain parts of the ``Encoder`` protocol (``codesift.model.encoder``) for stand-in models in tests
    and benchmarks; a subclass writes ``encode`` and overrides the sizes it needs.

    One token per whitespace-separated word plus two special tokens, no instruction prefixes, and no
    character offsets (``token_spans`` is None, so an indexer counts each piece with ``count_tokens``).
    """

    name = "stand-in"
    fingerprint = "stand-in"
    precision = "float32"
    pooling = "mean"
    dimension = 64
    matryoshka_dims: tuple[int, ...] = (64,)
    max_length = 8192

    def count_tokens(self, texts, task: str = "nl2code", role: str | None = "query") -> list[int]:
        """Words plus two special tokens per text."""
        return [len(t.split()) + 2 for t in texts]

    def token_counter(self):
        """``count_tokens`` itself: a stand-in has no tokenizer state to copy."""
        return self.count_tokens

    def token_spans(self, text: str, task: str = "nl2code",
                    role: str | None = "query") -> tuple[list[tuple[int, int]], int] | None:
        """None (no offsets): callers count pieces with ``count_tokens``."""
        return None

    def prefix(self, task: str = "nl2code", role: str | None = "query") -> str:
        """No instruction prefixes."""
        return ""


class ForwardingEncoder:
    """An ``Encoder`` that hands every member to ``inner``: subclass it to change one part of a real model
    (slow its ``encode`` down, count its tokenizer calls, drop its offsets) without touching the model."""

    def __init__(self, inner) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def precision(self) -> str:
        return self.inner.precision

    @property
    def pooling(self) -> str:
        return self.inner.pooling

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        return self.inner.matryoshka_dims

    @property
    def max_length(self) -> int:
        return self.inner.max_length

    def encode(self, texts, *args, **kwargs):
        return self.inner.encode(texts, *args, **kwargs)

    def count_tokens(self, texts, task: str = "nl2code", role: str | None = "query") -> list[int]:
        return self.inner.count_tokens(texts, task=task, role=role)

    def token_counter(self):
        return self.inner.token_counter()

    def token_spans(self, text: str, task: str = "nl2code",
                    role: str | None = "query") -> tuple[list[tuple[int, int]], int] | None:
        return self.inner.token_spans(text, task=task, role=role)

    def prefix(self, task: str = "nl2code", role: str | None = "query") -> str:
        return self.inner.prefix(task, role)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


class GitRepoBuilder:
    """A throwaway git repository for tests: ``commit(message, {path: text or None})`` returns the new sha."""

    def __init__(self, path: str | Path, branch: str = "main") -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", branch)

    def git(self, *args: str, author: str = "Ada", email: str = "ada@example.com") -> str:
        """Run git in the repository with a fixed identity and no user or system config."""
        import os
        import subprocess

        env = {
            "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": "Ada",
            "GIT_COMMITTER_EMAIL": "ada@example.com", "HOME": str(self.path), "GIT_CONFIG_NOSYSTEM": "1",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        return subprocess.run(["git", "-C", str(self.path), *args], check=True, capture_output=True, text=True,
                              env=env).stdout

    def commit(self, message: str, files: dict[str, str | None], author: str = "Ada",
               email: str = "ada@example.com") -> str:
        """Write (text) or delete (None) the files, commit them all, and return the commit's sha."""
        for name, text in files.items():
            target = self.path / name
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, author=author, email=email)
        return self.git("rev-parse", "HEAD").strip()


def damage_table_page(db_path: str | Path, table: str) -> None:
    """Overwrite the root page of ``table`` in the SQLite file ``db_path`` with garbage (its WAL checkpointed
    first), so that reading it fails with "database disk image is malformed": for damage tests and replays."""
    import sqlite3

    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = db.execute("PRAGMA page_size").fetchone()[0]
    root_page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    db.close()
    with open(db_path, "r+b") as fh:
        fh.seek((root_page - 1) * page)
        fh.write(b"\xde\xad" * (page // 2))


class FailOnceEncoder:
    """An encoder whose first ``encode`` of a batch holding ``marker`` raises: for retry tests of distributed jobs.

    "Once" holds across processes: the first failure creates ``flag``, and a failure happens only while
    ``flag`` does not exist. Every ``encode`` call is also logged as one line in ``calls`` (when given), so a
    test sees which texts were embedded in worker processes.
    """

    def __init__(self, encoder, marker: str, flag: str | Path, calls: str | Path | None = None) -> None:
        self.encoder, self.marker, self.flag, self.calls = encoder, marker, Path(flag), calls
        self.fingerprint, self.dimension = encoder.fingerprint, encoder.dimension

    def encode(self, texts, *args, **kwargs):
        texts = list(texts)
        if self.calls is not None and texts:
            with open(self.calls, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(texts[0]) + "\n")
        if self.marker in texts:
            try:
                self.flag.open("x").close()
            except FileExistsError:
                pass
            else:
                raise RuntimeError(f"injected failure on a batch holding {self.marker!r}")
        return self.encoder.encode(texts, *args, **kwargs)


def fail_once_encoder(spec, marker: str, flag: str | Path, calls: str | Path | None = None) -> FailOnceEncoder:
    """A ``make_encoder`` for ``codesift.model.distributed``: the spec's Embedder wrapped in FailOnceEncoder."""
    from codesift.model.distributed import load_encoder

    return FailOnceEncoder(load_encoder(spec), marker, flag, calls)
