"""The whole mining run: walk sources -> pairs -> dedupe -> cap -> decontaminate -> JSONL + stats."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from codesift.data.chunking import PieceCounter
from codesift.data.commit_chunks import ChunkPairConfig, LexicalIndex
from codesift.data.commits import CommitConfig
from codesift.data.mining import (
    Deduper,
    MineConfig,
    MineReport,
    SourceRoot,
    cap_per_source,
    iter_files,
    mine_file,
    source_roots,
    text_hash,
)
from codesift.data.pair import Pair

logger = logging.getLogger(__name__)

PERCENTILES = (5, 25, 50, 75, 95)


@dataclass
class MineResult:
    """Pairs written and the statistics of the run."""

    pairs: list[Pair]
    stats: dict = field(default_factory=dict)


def _mine_one(args: tuple[Path, str, MineConfig]) -> tuple[list[Pair], MineReport]:
    path, source, cfg = args
    report = MineReport()
    return mine_file(path, source, cfg, report), report


def _merge(into: MineReport, part: MineReport) -> None:
    for k, v in part.files.items():
        into.files[k] = into.files.get(k, 0) + v
    for k, v in part.skipped.items():
        into.skipped[k] = into.skipped.get(k, 0) + v
    for k, v in part.skipped_examples.items():
        into.skipped_examples.setdefault(k, []).extend(v[: max(0, 3 - len(into.skipped_examples.get(k, [])))])
    for k, v in part.dropped.items():
        into.dropped[k] = into.dropped.get(k, 0) + v
    into.units += part.units


def mine(
    paths: Iterable[str | Path],
    cfg: MineConfig | None = None,
    exclude: Iterable[str | Path] = (),
    extra_pairs: Iterable[Pair] = (),
    split_sources: bool = False,
    workers: int = 1,
    progress: bool = False,
    near_threshold: float = 0.7,
    commits: Iterable[str | Path] = (),
    commit_cfg: CommitConfig | None = None,
    changed_chunks: ChunkMining | None = None,
    refuse: Iterable[str | Path] = (),
) -> MineResult:
    """Mine pairs from source trees and git histories (``commits``: repositories, ``NAME=PATH`` names one),
    plus ``extra_pairs`` such as MBPP train; deduped, capped and decontaminated.

    With ``changed_chunks`` a history gives localization pairs (message -> each chunk the commit changed, with
    hard negatives; ``data.commit_chunks``) instead of message -> diff; these are deduped as whole pairs (one
    message leads to several chunks) and their negatives are decontaminated too. No history of SWE-bench's
    twelve, of the localization benchmark, or of a repository listed in a ``refuse`` file is read."""
    from codesift.data.commits import open_repository, refuse_reserved, reserved_repositories
    from codesift.data.decontam import DecontamConfig, Decontaminator

    cfg = cfg or MineConfig()
    exclude = list(exclude)
    histories = [_named(raw) for raw in commits]
    reserved = reserved_repositories(refuse)
    for _, repo, _ in histories:  # refuse a bad repository (SWE-bench's, the localization benchmark's) before any long work
        open_repository(repo)
        refuse_reserved(repo, reserved)
    decontam = Decontaminator.from_beir(exclude, DecontamConfig(threshold=near_threshold)) if exclude else None
    roots: list[SourceRoot] = source_roots(paths, split_sources=split_sources)
    files = [
        (path, root.name, cfg)
        for root, path in iter_files(roots, cfg.skip_tests, cfg.max_files_per_source, cfg.seed)
    ]
    report = MineReport()
    candidates: list[Pair] = list(extra_pairs)
    candidates += _mine_files(files, report, workers, progress)
    from_commits, localization = _mine_histories(histories, report, commit_cfg, changed_chunks, reserved, progress)
    candidates += from_commits
    n_candidates = len(candidates) + len(localization)

    unique = _dedupe(candidates, localization)
    report.drop("duplicate", n_candidates - len(unique))
    capped = cap_per_source(unique, cfg.max_per_source, cfg.seed)
    report.drop("per-source cap", len(unique) - len(capped))
    kept, contaminated = capped, []
    if decontam is not None:
        kept, contaminated = _decontaminate(capped, decontam, report, progress)
        report.drop("decontaminated", len(capped) - len(kept))
    stats = compute_stats(kept, report, n_candidates)
    if histories:
        stats["commits_read"] = dict(report.commits)
    if localization:
        stats["negatives"] = {"pairs_with_negatives": sum(1 for p in kept if p.negatives),
                              "negatives": sum(len(p.negatives) for p in kept), "snapshots": dict(report.snapshots)}
    stats["decontamination"] = {
        "excluded_sets": [str(Path(e)) for e in exclude],
        "eval_texts": len(decontam) if decontam else 0,
        "near_duplicate_jaccard": near_threshold,
        "dropped": report.dropped.get("decontaminated", 0),
        "examples": contaminated[:20],
    }
    return MineResult(kept, stats)


def _mine_files(files: list[tuple[Path, str, MineConfig]], report: MineReport, workers: int,
                progress: bool) -> list[Pair]:
    """The pairs of every source file (``workers`` processes for more than 50 files), their counts into ``report``."""
    from tqdm.auto import tqdm

    found: list[Pair] = []
    bar = tqdm(total=len(files), unit="file", desc="mining", disable=not progress)
    if workers > 1 and len(files) > 50:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for pairs, part in pool.imap(_mine_one, files, chunksize=16):
                found.extend(pairs)
                _merge(report, part)
                bar.update()
    else:
        for item in files:
            pairs, part = _mine_one(item)
            found.extend(pairs)
            _merge(report, part)
            bar.update()
    bar.close()
    return found


def _mine_histories(histories: list[tuple[str | None, Path, str | None]], report: MineReport,
                    commit_cfg: CommitConfig | None, changed_chunks: ChunkMining | None, reserved,
                    progress: bool) -> tuple[list[Pair], list[Pair]]:
    """(message -> diff pairs, localization pairs) of the git histories; localization only with ``changed_chunks``."""
    from codesift.data.commit_chunks import changed_chunk_pairs
    from codesift.data.commits import commit_pairs

    from_commits: list[Pair] = []
    localization: list[Pair] = []
    for name, repo, rev in histories:
        if changed_chunks is None:
            from_commits.extend(commit_pairs(repo, name, commit_cfg, report, progress=progress, rev=rev))
        else:
            localization.extend(changed_chunk_pairs(
                repo, name, changed_chunks.config, report, counter=changed_chunks.counter,
                make_index=changed_chunks.make_index, progress=progress, rev=rev, reserved=reserved))
    return from_commits, localization


def _dedupe(candidates: list[Pair], localization: list[Pair]) -> list[Pair]:
    """Candidates deduped by ``Deduper``; localization pairs deduped as whole (query, document) pairs, since one
    message leads to several chunks."""
    deduper = Deduper()
    whole_pairs: set[tuple[str, str]] = set()
    unique = [p for p in candidates if deduper.keep(p)]
    for pair in localization:
        key = (text_hash(pair.query), text_hash(pair.document))
        if key not in whole_pairs:
            whole_pairs.add(key)
            unique.append(pair)
    return unique


def _decontaminate(pairs: list[Pair], decontam, report: MineReport,
                   progress: bool) -> tuple[list[Pair], list[dict[str, str]]]:
    """(clean pairs, the first 200 contaminated ones' descriptions); negatives matching an eval text are dropped."""
    from tqdm.auto import tqdm

    kept: list[Pair] = []
    contaminated: list[dict[str, str]] = []
    for pair in tqdm(pairs, desc="decontaminating", unit="pair", disable=not progress):
        hit = decontam.contaminated(pair.query, pair.document)
        if hit is None:
            clean = tuple(n for n in pair.negatives if decontam.match(n) is None)
            report.drop("negative decontaminated", len(pair.negatives) - len(clean))
            kept.append(replace(pair, negatives=clean) if len(clean) < len(pair.negatives) else pair)
        elif len(contaminated) < 200:
            contaminated.append({"task": pair.task, "source": pair.source, "symbol": pair.symbol, "match": hit})
    return kept, contaminated


@dataclass
class ChunkMining:
    """How ``mine`` turns histories into localization pairs: the chunker's token counter (the index model's) and
    the lexical index of the negatives, both built by the caller."""

    config: ChunkPairConfig = field(default_factory=lambda: ChunkPairConfig())
    counter: PieceCounter | None = None
    make_index: Callable[[list[str]], LexicalIndex] | None = None


_PINNED = re.compile(r"^(.*)@([0-9a-fA-F]{7,40})$")


def _named(raw: str | Path) -> tuple[str | None, Path, str | None]:
    """``[NAME=]PATH[@COMMIT]`` -> (NAME, PATH, COMMIT); a path that exists as given is never split."""
    raw = str(raw)
    rev = None
    pinned = _PINNED.match(raw)
    if pinned and not Path(raw).exists():
        raw, rev = pinned.group(1), pinned.group(2)
    if "=" in raw and not Path(raw).exists():
        name, _, value = raw.partition("=")
        return name, Path(value), rev
    return None, Path(raw), rev


def _percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}


def compute_stats(pairs: list[Pair], report: MineReport | None = None, candidates: int | None = None) -> dict:
    """Counts per task, language and source, and length percentiles (characters) of queries and documents."""
    by_task: dict[str, int] = {}
    by_language: dict[str, int] = {}
    by_task_language: dict[str, dict[str, int]] = {}
    by_source: dict[str, int] = {}
    for pair in pairs:
        by_task[pair.task] = by_task.get(pair.task, 0) + 1
        by_language[pair.language] = by_language.get(pair.language, 0) + 1
        row = by_task_language.setdefault(pair.language, {})
        row[pair.task] = row.get(pair.task, 0) + 1
        top = pair.source.split("/")[0]
        by_source[top] = by_source.get(top, 0) + 1
    lengths = {
        task: {
            "query_chars": _percentiles([len(p.query) for p in pairs if p.task == task]),
            "document_chars": _percentiles([len(p.document) for p in pairs if p.task == task]),
        }
        for task in sorted(by_task)
    }
    stats: dict = {
        "pairs": len(pairs),
        "by_task": dict(sorted(by_task.items())),
        "by_language": dict(sorted(by_language.items(), key=lambda kv: -kv[1])),
        "by_language_task": by_task_language,
        "by_source": dict(sorted(by_source.items(), key=lambda kv: -kv[1])),
        "lengths": lengths,
    }
    if candidates is not None:
        stats["candidates"] = candidates
    if report is not None:
        stats["files_by_language"] = dict(sorted(report.files.items(), key=lambda kv: -kv[1]))
        stats["units"] = report.units
        stats["skipped_files"] = dict(sorted(report.skipped.items(), key=lambda kv: -kv[1]))
        stats["skipped_examples"] = report.skipped_examples
        stats["dropped_pairs"] = report.dropped
    return stats


def write_pairs(pairs: Iterable[Pair], out: str | Path) -> int:
    """Write pairs as JSONL; returns how many."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def stats_markdown(stats: dict) -> str:
    """The stats as Markdown tables (for DATA.md and the corpus report)."""
    tasks = list(stats["by_task"])
    lines = [f"Pairs: **{stats['pairs']:,}**" + (f" (from {stats['candidates']:,} candidates)" if "candidates" in stats else ""), ""]
    lines += ["| language | " + " | ".join(tasks) + " | total |", "|---" * (len(tasks) + 2) + "|"]
    for lang, total in stats["by_language"].items():
        row = stats["by_language_task"][lang]
        lines.append(f"| {lang} | " + " | ".join(f"{row.get(t, 0):,}" for t in tasks) + f" | {total:,} |")
    lines.append("| **total** | " + " | ".join(f"{stats['by_task'][t]:,}" for t in tasks) + f" | {stats['pairs']:,} |")
    lines += ["", "Lengths in characters (p5 / p50 / p95):", "", "| task | query | document |", "|---|---|---|"]
    for task, lens in stats["lengths"].items():
        q, d = lens["query_chars"], lens["document_chars"]
        lines.append(f"| {task} | {q['p5']:.0f} / {q['p50']:.0f} / {q['p95']:.0f} | {d['p5']:.0f} / {d['p50']:.0f} / {d['p95']:.0f} |")
    if "by_source" in stats:
        lines += ["", "Pairs by source: " + ", ".join(f"{k} {v:,}" for k, v in stats["by_source"].items())]
    if stats.get("commits_read"):
        lines += ["", "Commits read: " + ", ".join(f"{k} {v:,}" for k, v in stats["commits_read"].items())]
    if stats.get("files_by_language"):
        lines += ["", "Files read: " + ", ".join(f"{k} {v:,}" for k, v in stats["files_by_language"].items())]
    if stats.get("skipped_files"):
        lines += ["", "Files skipped: " + ", ".join(f"{k} {v:,}" for k, v in stats["skipped_files"].items())]
    if stats.get("dropped_pairs"):
        lines += ["", "Pairs dropped: " + ", ".join(f"{k} {v:,}" for k, v in stats["dropped_pairs"].items())]
    if "decontamination" in stats:
        dc = stats["decontamination"]
        lines += [
            "",
            (f"Decontamination: {dc['eval_texts']:,} evaluation texts from {len(dc['excluded_sets'])} sets; "
             f"{dc['dropped']:,} pairs dropped (exact or Jaccard >= {dc['near_duplicate_jaccard']})."),
        ]
    return "\n".join(lines) + "\n"


def print_stats(stats: dict, echo: Callable[[str], None] = print) -> None:
    """Print the stats tables with rich."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    tasks = list(stats["by_task"])
    table = Table(title=f"{stats['pairs']:,} pairs")
    table.add_column("language")
    for task in tasks:
        table.add_column(task, justify="right")
    table.add_column("total", justify="right")
    for lang, total in stats["by_language"].items():
        row = stats["by_language_task"][lang]
        table.add_row(lang, *[f"{row.get(t, 0):,}" for t in tasks], f"{total:,}")
    console.print(table)
    lengths = Table(title="lengths (chars) p5 / p25 / p50 / p75 / p95")
    lengths.add_column("task")
    lengths.add_column("query")
    lengths.add_column("document")
    for task, lens in stats["lengths"].items():
        lengths.add_row(task, *[" / ".join(f"{v:.0f}" for v in lens[k].values()) for k in ("query_chars", "document_chars")])
    console.print(lengths)
    for key in ("skipped_files", "dropped_pairs"):
        if stats.get(key):
            console.print(f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v:,}" for k, v in stats[key].items()))


def save_stats(stats: dict, path: str | Path) -> None:
    """Write the stats as JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(stats, indent=2, default=lambda o: asdict(o)) + "\n", encoding="utf-8")
