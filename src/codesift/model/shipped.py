"""Models whose weights ship inside codesift: loadable by name, with no hub and no download.

``codesift-mini`` is all-MiniLM-L6-v2 fine-tuned by codesift's own recipe on code (its card:
``codesift/shipped/codesift-mini/README.md``). Its folder is a sentence-transformers folder like any
other; only the name lookup lives here.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "shipped"
SHIPPED_MODELS = ("codesift-mini",)
ALIASES = {"offline": "codesift-mini"}  # the model to use on a machine with no hub
CPU_DEFAULT_MODEL = "codesift-mini"


def shipped_model_name(name: str) -> str | None:
    """The shipped model that ``name`` means (``codesift-mini``, ``codesift/codesift-mini``, ``offline``), or None."""
    short = ALIASES.get(name, name.removeprefix("codesift/"))
    return short if short in SHIPPED_MODELS else None


def shipped_model_path(name: str) -> Path | None:
    """The folder of the shipped model ``name`` means, if it is installed."""
    short = shipped_model_name(name)
    if short is None:
        return None
    folder = SHIPPED_ROOT / short
    return folder if (folder / "modules.json").is_file() else None


def has_gpu() -> bool:
    """Whether an NVIDIA driver is present, told without importing torch (cold CLI starts stay fast)."""
    return Path("/proc/driver/nvidia/version").exists()
