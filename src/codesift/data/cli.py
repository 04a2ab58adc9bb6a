"""`codesift data ...` commands: mine training pairs, show units and chunks of a file."""

from __future__ import annotations

from pathlib import Path

import typer

data_app = typer.Typer(help="Parse code into units and chunks; mine training pairs from source trees.", no_args_is_help=True)


@data_app.command("mine")
def mine_cmd(
    paths: list[Path] = typer.Argument(None, help="Source folders or files (NAME=PATH names the source)."),
    output: Path = typer.Option(..., "--output", "-o", help="Pairs JSONL to write."),
    exclude: list[Path] = typer.Option([], "--exclude", help="BEIR folder to decontaminate against (repeatable)."),
    commits: list[Path] = typer.Option(
        [], "--commits", help="Git repository (clone or bare mirror; [NAME=]PATH[@COMMIT] names it and pins its history): add "
        "commit message -> diff nl2code pairs from its history (repeatable)."
    ),
    max_commits: int | None = typer.Option(None, "--max-commits", help="Read at most this many newest commits per repository."),
    commit_diff_chars: int = typer.Option(4000, "--commit-diff-chars", help="Cut a commit's diff to whole hunks under this."),
    changed_chunks: bool = typer.Option(
        False, "--changed-chunks", help="With --commits: localization pairs instead (message -> each chunk the commit "
        "changed, as the index chunks it at the parent, with hard negatives of the same repository)."
    ),
    chunk_model: str | None = typer.Option(
        None, "--chunk-model", help="With --changed-chunks: the model whose tokenizer and limit cut the chunks (default: the index's)."
    ),
    refuse: list[Path] = typer.Option(
        [], "--refuse", help="File of owner/name repositories never to mine, besides the localization benchmark's (repeatable)."
    ),
    mbpp: Path | None = typer.Option(None, "--mbpp", help="mbpp.jsonl: add its train split (601-974) as nl2code pairs."),
    tasks: str = typer.Option("nl2code,code2nl,code2completion", "--tasks", help="Comma-separated tasks to mine."),
    max_per_source: int | None = typer.Option(None, "--max-per-source", help="Cap pairs per source and task."),
    max_files_per_source: int | None = typer.Option(
        None, "--max-files-per-source", help="Sample at most this many files per source (bounds run time)."
    ),
    include_tests: bool = typer.Option(False, "--include-tests", help="Also mine tests and test data."),
    split_sources: bool = typer.Option(False, "--split-sources", help="Each top-level entry of a PATH is its own source."),
    near_threshold: float = typer.Option(0.7, "--near-threshold", help="Jaccard (3-gram shingles) for near duplicates."),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes for parsing."),
    stats: Path | None = typer.Option(None, "--stats", help="Write stats JSON here (default: OUTPUT.stats.json)."),
    report: Path | None = typer.Option(None, "--report", help="Write stats as Markdown here."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-source sampling."),
) -> None:
    """Mine (query, document) pairs: nl2code, code2nl, code2completion from source trees, commit message -> diff
    from git histories; deduped and decontaminated."""
    from codesift.data.commits import CommitConfig
    from codesift.data.mbpp import load_mbpp_pairs
    from codesift.data.mining import MineConfig
    from codesift.data.pipeline import mine, print_stats, save_stats, stats_markdown, write_pairs

    task_tuple = tuple(t.strip() for t in tasks.split(",") if t.strip())
    cfg = MineConfig(
        tasks=task_tuple, max_per_source=max_per_source, max_files_per_source=max_files_per_source,
        skip_tests=not include_tests, seed=seed,
    )
    paths = paths or []
    if not paths and not commits and not mbpp:
        raise ValueError("nothing to mine; pass source PATHs, --commits REPO or --mbpp FILE")
    commit_cfg = CommitConfig(include_tests=include_tests, max_commits=max_commits, max_diff_chars=commit_diff_chars)
    if not 0 < near_threshold <= 1:
        raise ValueError("--near-threshold must be in (0, 1]")
    extra = load_mbpp_pairs(mbpp, "train") if mbpp else []
    if (changed_chunks or chunk_model or refuse) and not commits:
        raise ValueError("--changed-chunks, --chunk-model and --refuse need --commits REPO")
    chunk_mining = _chunk_mining(chunk_model, max_commits, include_tests) if changed_chunks else None
    result = mine(
        paths, cfg, exclude=exclude, extra_pairs=extra, split_sources=split_sources, workers=workers,
        progress=True, near_threshold=near_threshold, commits=commits, commit_cfg=commit_cfg,
        changed_chunks=chunk_mining, refuse=refuse,
    )
    n = write_pairs(result.pairs, output)
    save_stats(result.stats, stats or output.with_suffix(".stats.json"))
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(stats_markdown(result.stats), encoding="utf-8")
    print_stats(result.stats)
    typer.echo(f"wrote {n:,} pairs to {output}")


def _chunk_mining(chunk_model: str | None, max_commits: int | None, include_tests: bool):
    """Localization mining as the index chunks: the model's token counter and limit, BM25 negatives."""
    from codesift.data.commit_chunks import ChunkPairConfig
    from codesift.data.pipeline import ChunkMining
    from codesift.eval.bm25 import BM25Index
    from codesift.index.config import IndexConfig
    from codesift.index.indexer import DocumentTokens
    from codesift.model.embedder import Embedder

    embedder = Embedder(chunk_model, device="cpu")
    limit = min(IndexConfig().max_tokens, embedder.max_length)  # as Indexer.chunk_limit
    cfg = ChunkPairConfig(max_commits=max_commits, include_tests=include_tests, max_tokens=limit)
    return ChunkMining(cfg, DocumentTokens(embedder), BM25Index)


@data_app.command("mix")
def mix_cmd(
    spec: Path = typer.Argument(..., help="Mix spec YAML: components (file, task, count), seed, holdout, exclude."),
    output: Path = typer.Option(..., "--output", "-o", help="Training mix JSONL to write."),
    holdout_dir: Path | None = typer.Option(None, "--holdout-dir", help="Write each component's held-out pairs here as a BEIR folder."),
    report: Path | None = typer.Option(None, "--report", help="Write the mix table as Markdown here."),
) -> None:
    """Sample a training mix from several pair files, decontaminated as a whole (see configs/mix-*.yaml)."""
    from codesift.data.mix import MixSpec, build_mix

    result = build_mix(MixSpec.from_yaml(spec), output, holdout_dir)
    table = result.markdown()
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(table, encoding="utf-8")
    typer.echo(table)
    typer.echo(f"wrote {sum(r['train'] for r in result.rows):,} pairs to {output}")


@data_app.command("units")
def units_cmd(path: Path = typer.Argument(..., help="A source file.")) -> None:
    """List the functions, methods and classes of a file."""
    from codesift.data.files import read_source
    from codesift.data.languages import detect_language
    from codesift.data.units import extract_units

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    text, reason = read_source(path)
    if text is None:
        raise ValueError(f"{path} skipped: {reason}")
    language = detect_language(path, text.split("\n", 1)[0])
    if language is None:
        raise ValueError(f"unknown language for {path}; use a known extension or a shebang")
    for unit in extract_units(text, language):
        doc = (unit.docstring or "").split("\n", 1)[0][:60]
        typer.echo(f"{unit.start_line:>5}-{unit.end_line:<5} {unit.kind:8} {unit.qualified_name:40} {doc}")


@data_app.command("chunks")
def chunks_cmd(
    path: Path = typer.Argument(..., help="A source file."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Token limit per chunk (estimated)."),
) -> None:
    """Show how a file is cut into chunks for indexing."""
    from codesift.data.chunking import chunk_file, estimate_tokens

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    chunks, reason = chunk_file(path, max_tokens=max_tokens)
    if reason:
        raise ValueError(f"{path} skipped: {reason}")
    for c in chunks:
        typer.echo(f"{c.start_line:>5}-{c.end_line:<5} {c.kind:8} ~{estimate_tokens(c.text):>5} tok  {c.symbol or ''}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app (heavy imports go inside the commands)."""
    app.add_typer(data_app, name="data")
