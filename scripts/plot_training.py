"""Plot training logs (OUT/metrics.jsonl of `codesift train`): loss per step and the dev nDCG@10 curve.

    python scripts/plot_training.py OUT.png NAME=metrics.jsonl [NAME=metrics.jsonl ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read(path: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    dev = [(r["step"], 100 * r["eval_ndcg_at_10"]) for r in rows if "eval_ndcg_at_10" in r]
    return loss, dev


def smooth(values: list[float], window: int = 10) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    missing = [a.split("=", 1)[1] for a in argv[1:] if not Path(a.split("=", 1)[1]).is_file()]
    if missing:
        print(f"error: no such metrics file: {', '.join(missing)} (run `codesift train` first)", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    for arg in argv[1:]:
        name, path = arg.split("=", 1)
        loss, dev = read(path)
        steps, values = zip(*loss)
        line, = ax_loss.plot(steps, values, alpha=0.25)
        ax_loss.plot(steps, smooth(list(values)), color=line.get_color(), label=f"{name} (mean of 10 steps)")
        if dev:
            ax_dev.plot(*zip(*dev), marker="o", color=line.get_color(), label=name)
    ax_loss.set(xlabel="step", ylabel="loss (InfoNCE summed over Matryoshka dims)", title="training loss")
    ax_dev.set(xlabel="step", ylabel="nDCG@10 (humaneval, dev)", title="dev retrieval")
    for ax in (ax_loss, ax_dev):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[0], dpi=120)
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
