"""Results files, Markdown reports, rich tables and PNG plots of one or several evaluation runs.

A run is the dict that :func:`codesift.eval.runner.run_eval` returns and writes as ``results.json``.
Metrics are stored as fractions in [0, 1] and shown as percentages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codesift.eval.metrics import MAIN_METRIC, METRICS

_LABELS = {"ndcg_at_10": "nDCG@10", "mrr_at_10": "MRR@10", "recall_at_1": "R@1", "recall_at_10": "R@10",
           "recall_at_100": "R@100", "map_at_100": "MAP@100"}


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` (or the folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no results.json; pass a folder written by `codesift eval --out` or its results.json")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ValueError(f"{p}: not a codesift results file (no 'results' list)")  # noqa: TRY004 (bad file content)
    return doc


def best_rows(doc: dict) -> dict[str, dict]:
    """Each dataset's row at the largest dimension evaluated (the model's full vector)."""
    out: dict[str, dict] = {}
    for r in doc["results"]:
        cur = out.get(r["dataset"])
        if cur is None or (r.get("dim") or 0) > (cur.get("dim") or 0):
            out[r["dataset"]] = r
    return out


def run_label(doc: dict) -> str:
    """The run's name (``--name``, else derived from the model path)."""
    return str(doc.get("model", "?"))


def _datasets(docs: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for d in docs:
        for r in d["results"]:
            seen.setdefault(r["dataset"], None)
    return list(seen)


def _paper(docs: list[dict]) -> dict[str, dict[str, float]]:
    """Paper nDCG@10 (fractions) by model then dataset, merged over runs."""
    out: dict[str, dict[str, float]] = {}
    for d in docs:
        for ds, figures in (d.get("paper_ndcg_at_10") or {}).items():
            for model, v in figures.items():
                out.setdefault(model, {})[ds] = v
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def markdown_report(docs: list[dict], title: str = "Retrieval evaluation") -> str:
    """A Markdown report: nDCG@10 per dataset for each run and the paper, then every metric of each run."""
    datasets = _datasets(docs)
    paper = _paper(docs)
    note = ("nDCG@10 (%), full dimension; paper figures are from task.json (trend only: "
            "our corpora are rebuilt, not MTEB's).")
    lines = [f"# {title}", "", note, ""]
    lines.append("| model | " + " | ".join(datasets) + " | mean |")
    lines.append("|---" * (len(datasets) + 2) + "|")
    for d in docs:
        best = best_rows(d)
        vals = [best[ds][MAIN_METRIC] if ds in best else None for ds in datasets]
        mean = _mean([v for v in vals if v is not None]) if all(v is not None for v in vals) else None
        lines.append(f"| {run_label(d)} | " + " | ".join(_pct(v) for v in vals) + f" | {_pct(mean)} |")
    for model, figures in paper.items():
        vals = [figures.get(ds) for ds in datasets]
        mean = _mean([v for v in vals if v is not None]) if all(v is not None for v in vals) else None
        lines.append(f"| {model} (paper) | " + " | ".join(_pct(v) for v in vals) + f" | {_pct(mean)} |")
    for d in docs:
        lines += ["", f"## {run_label(d)}", "",
                  f"model `{d.get('model_path', '?')}`, pooling {d.get('pooling') or '–'}, "
                  f"created {d.get('created', '?')}, codesift {d.get('codesift_version', '?')}"
                  + (" (partial: the run stopped before its last dataset)" if d.get("complete") is False else ""), ""]
        lines.append("| dataset | task | dim | " + " | ".join(_LABELS[m] for m in METRICS) + " | queries | docs | seconds |")
        lines.append("|---" * (len(METRICS) + 6) + "|")
        for r in d["results"]:
            lines.append(f"| {r['dataset']} | {r.get('task', '')} | {r.get('dim') or '–'} | "
                         + " | ".join(_pct(r.get(m)) for m in METRICS)
                         + f" | {r['n_queries']} | {r['n_docs']} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def results_table(doc: dict) -> Any:
    """A rich table of one run: every metric for each dataset and dimension."""
    from rich.table import Table

    table = Table(title=f"{run_label(doc)} (%)")
    for col in ["dataset", "dim", *(_LABELS[m] for m in METRICS), "queries", "docs", "s"]:
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for r in doc["results"]:
        table.add_row(r["dataset"], str(r.get("dim") or "–"), *(_pct(r.get(m)) for m in METRICS),
                      str(r["n_queries"]), str(r["n_docs"]), f"{r['seconds']:.1f}")
    return table


def compare_table(docs: list[dict], metric: str = MAIN_METRIC) -> Any:
    """A rich table of ``metric`` per dataset for each run, with each run's delta against the first."""
    from rich.table import Table

    if len(docs) < 2:
        raise ValueError("--compare needs at least two results (folders or results.json files)")
    table = Table(title=f"{_LABELS.get(metric, metric)} (%), deltas against {run_label(docs[0])}")
    table.add_column("dataset")
    table.add_column(run_label(docs[0]), justify="right")
    for d in docs[1:]:
        table.add_column(run_label(d), justify="right")
        table.add_column("Δ", justify="right")
    rows = [best_rows(d) for d in docs]
    datasets = _datasets(docs)
    common = [x for x in datasets if all(x in r for r in rows)]
    mean_label = "mean" if len(common) == len(datasets) else f"mean of {len(common)} shared"
    for ds in [*datasets, mean_label]:
        if ds == mean_label:
            vals = [_mean([r[x][metric] for x in common]) if common else None for r in rows]
        else:
            vals = [r[ds][metric] if ds in r else None for r in rows]
        cells = [_pct(vals[0])]
        for v in vals[1:]:
            delta = None if v is None or vals[0] is None else v - vals[0]
            color = "" if delta is None else ("green" if delta > 0 else "red" if delta < 0 else "")
            cells += [_pct(v), "–" if delta is None else f"[{color}]{100 * delta:+.2f}[/]" if color else f"{100 * delta:+.2f}"]
        table.add_row(ds, *cells)
    return table


def plot_benchmarks(docs: list[dict], path: str | Path, paper: bool = True) -> Path:
    """Grouped bars of nDCG@10 per benchmark: each run side by side, then the paper's figures (hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datasets = _datasets(docs)
    series: list[tuple[str, list[float | None], bool]] = []
    for d in docs:
        best = best_rows(d)
        series.append((run_label(d), [best[ds][MAIN_METRIC] if ds in best else None for ds in datasets], False))
    if paper:
        for model, figures in _paper(docs).items():
            series.append((f"{model} (paper)", [figures.get(ds) for ds in datasets], True))
    n = len(series)
    width = 0.8 / n
    x = np.arange(len(datasets))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 + len(datasets) * (0.4 + 0.32 * n)), 4.8))
    runs_cmap = plt.get_cmap("tab10")
    greys = plt.get_cmap("Greys")
    n_paper = sum(1 for s in series if s[2])
    for i, (label, vals, is_paper) in enumerate(series):
        heights = [100 * v if v is not None else 0.0 for v in vals]
        if is_paper:
            j = i - (n - n_paper)
            color, hatch = greys(0.3 + 0.5 * j / max(1, n_paper - 1)), "//"
        else:
            color, hatch = runs_cmap(i % 10), None
        bars = ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=label, color=color, hatch=hatch,
                      edgecolor="white" if not is_paper else "black", linewidth=0.4)
        if not is_paper:
            for b, v in zip(bars, vals):
                text = "n/a" if v is None else f"{100 * v:.1f}"  # n/a: this run did not evaluate the dataset
                ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points",
                            rotation=90 if v is None else 0)
    ax.set_xticks(x, datasets)
    ax.set_ylabel("nDCG@10 (%)")
    ax.set_ylim(0, 105)
    ax.set_title("nDCG@10 per benchmark (paper figures hatched; trend only)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.09), frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_matryoshka(docs: list[dict], path: str | Path) -> Path | None:
    """nDCG@10 against Matryoshka dimension, one line per (run, dataset); None if no run has two dimensions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for d in docs:
        by_ds: dict[str, list[tuple[int, float]]] = {}
        for r in d["results"]:
            if r.get("dim"):
                by_ds.setdefault(r["dataset"], []).append((int(r["dim"]), r[MAIN_METRIC]))
        for ds, pts in by_ds.items():
            if len(pts) > 1:
                curves.append((run_label(d) if len(docs) > 1 else "", ds, sorted(pts)))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    datasets = list(dict.fromkeys(c[1] for c in curves))
    runs = list(dict.fromkeys(c[0] for c in curves))
    styles = ["-", "--", ":", "-."]
    cmap = plt.get_cmap("tab10")
    for run, ds, pts in curves:
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", color=cmap(datasets.index(ds) % 10),
                linestyle=styles[runs.index(run) % len(styles)], label=f"{run} {ds}".strip())
    top = max(100 * p[1] for c in curves for p in c[2])
    ax.set_ylim(0, min(100.0, top + 10))  # from zero, so small differences do not look large
    ax.set_xscale("log", base=2)
    dims = sorted({p[0] for c in curves for p in c[2]})
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.minorticks_off()
    ax.set_xlabel("embedding dimension (Matryoshka truncation)")
    ax.set_ylabel("nDCG@10 (%)")
    ax.set_title("nDCG@10 against dimension")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_json(doc: dict, path: Path) -> Path:
    """Write ``doc`` as indented JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def write_outputs(doc: dict, out: Path) -> list[Path]:
    """Write ``results.json``, ``report.md``, ``benchmarks.png`` and (with several dims) ``matryoshka.png``."""
    write_json(doc, out / "results.json")
    (out / "report.md").write_text(markdown_report([doc], title=f"Retrieval evaluation: {run_label(doc)}"), encoding="utf-8")
    written = [out / "results.json", out / "report.md", plot_benchmarks([doc], out / "benchmarks.png")]
    m = plot_matryoshka([doc], out / "matryoshka.png")
    return written + ([m] if m else [])


def write_comparison(docs: list[dict], out: Path, title: str = "Retrieval evaluation: comparison") -> list[Path]:
    """Write ``report.md``, ``benchmarks.png`` (and ``matryoshka.png``) comparing several runs."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown_report(docs, title=title), encoding="utf-8")
    written = [out / "report.md", plot_benchmarks(docs, out / "benchmarks.png")]
    m = plot_matryoshka(docs, out / "matryoshka.png")
    return written + ([m] if m else [])
