"""Copy a trained codesift-mini run into the package (src/codesift/shipped/codesift-mini), weights in float16.

    python scripts/ship_mini.py runs/codesift-mini

float16 halves the folder (MiniLM-L6: 91 MB -> 45 MB, under the 50 MB the repository allows) and changes
the vectors by less than 1e-3 in cosine; the script checks that on real code before it replaces anything.
The model card (README.md in the folder) is kept: edit it by hand with the new scores.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "src" / "codesift" / "shipped" / "codesift-mini"
SKIP = {"checkpoints", "metrics.jsonl", "train_config.json", "model.safetensors", "tensorboard"}


def main(run: Path) -> None:
    from safetensors.torch import load_file, save_file

    from codesift.model.embedder import Embedder

    if not (run / "modules.json").is_file():
        sys.exit(f"error: {run} is not a trained model folder (no modules.json); train it first")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "codesift-mini"
        out.mkdir()
        for item in run.iterdir():
            if item.name in SKIP:
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
        weights = {k: v.half().contiguous() for k, v in load_file(run / "model.safetensors").items()}
        save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
        if (DEST / "README.md").is_file():
            shutil.copy2(DEST / "README.md", out / "README.md")
        texts = [p.read_text(encoding="utf-8")[:1500] for p in sorted((ROOT / "src" / "codesift").rglob("*.py"))[:64]]
        a = Embedder(str(run), device="cpu", dtype="float32").encode(texts, task="nl2code", role="document", truncate=True)
        b = Embedder(str(out), device="cpu", dtype="float32").encode(texts, task="nl2code", role="document", truncate=True)
        worst = float(1 - np.min(np.sum(a * b, axis=1)))
        size = (out / "model.safetensors").stat().st_size / 1e6
        print(f"float16 copy: max 1-cos {worst:.2e} over {len(texts)} files; model.safetensors {size:.1f} MB")
        if worst > 1e-3 or size > 50:
            sys.exit("error: the float16 copy drifts or is too big; not shipped")
        if DEST.exists():
            shutil.rmtree(DEST)
        shutil.copytree(out, DEST)
    print(f"shipped {run} -> {DEST}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/codesift-mini"))
