"""`codesift` commands of the eval area; see codesift/cli.py for the convention."""

from __future__ import annotations

from pathlib import Path

import typer


def _parse_dims(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"--dims takes comma-separated integers such as 64,128,256, got {text!r}") from None


def eval_command(
    paths: list[Path] | None = typer.Argument(None, help="More --data folders, or more runs after --compare."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model path, hub id or .gguf file; 'bm25' for BM25."),
    data: list[Path] | None = typer.Option(None, "--data", "-d", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels.tsv, task.json); repeatable."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for results.json, report.md and PNG plots."),
    dims: str | None = typer.Option(None, "--dims", help="Matryoshka dimensions to evaluate, e.g. 64,128,256,512,896."),
    batch_tokens: int | None = typer.Option(None, "--batch-tokens", help="Token budget per forward batch."),
    name: str | None = typer.Option(None, "--name", help="Label of this run in tables and plots."),
    task: str | None = typer.Option(None, "--task", help="Instruction task for every dataset (overrides task.json)."),
    top_k: int = typer.Option(100, "--top-k", help="Documents retrieved per query (exact search)."),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("auto", "--dtype", help="auto, int8 (encoders on the CPU: ONNX Runtime), float32, bfloat16, float16."),
    max_length: int | None = typer.Option(None, "--max-length", help="Token limit per text (longer ones are truncated)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Corpus embedding cache (default ~/.cache/codesift/embeddings)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the corpus embedding cache."),
    compare: list[Path] | None = typer.Option(None, "--compare", help="Compare saved runs (folders or results.json): --compare A B ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Evaluate retrieval (nDCG@10, MRR@10, Recall@1/10/100, MAP@100) on BEIR folders, or compare saved runs."""
    import sys

    from rich.console import Console

    from codesift.eval import report

    console = Console() if sys.stdout.isatty() else Console(width=160)
    if compare:
        if model or data:
            raise ValueError("--compare takes saved runs only; drop --model/--data (or run them without --compare)")
        docs = [report.load_results(p) for p in [*compare, *(paths or [])]]
        console.print(report.compare_table(docs))
        if out is not None:
            for p in report.write_comparison(docs, out):
                console.print(f"wrote {p}")
        return
    if not model:
        raise ValueError("pass --model MODEL (a path, hub id, .gguf file or 'bm25') and --data DIR, or --compare A B")
    from codesift.eval.runner import EvalConfig, run_eval

    config = EvalConfig(
        model=model, data=[*(data or []), *(paths or [])], out=out, name=name, dims=_parse_dims(dims),
        batch_tokens=batch_tokens, task=task, top_k=top_k, device=device, dtype=dtype, max_length=max_length,
        cache_dir=cache_dir, use_cache=not no_cache, show_progress=not quiet,
    )
    doc = run_eval(config)
    console.print(report.results_table(doc))
    if out is not None:
        console.print(f"wrote {out / 'results.json'}, {out / 'report.md'} and plots")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app (heavy imports go inside the commands)."""
    app.command("eval")(eval_command)
