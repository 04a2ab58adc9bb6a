"""File localization on real history: for a commit's message, are the files it changed among the top files?

    # 1. mine cases (committed, so runs are reproducible): commits that change 1-5 source files
    python benchmarks/localization.py mine --repo python-poetry/poetry=/work/.mirror/python-poetry+poetry/repo \\
        --repo ... --per-repo 20 --out benchmarks/data/localization.jsonl
    # 2. run: index each repository at every case's PARENT commit (one work tree, parents in time order,
    #    so only changed files are re-embedded) and search with the message
    python benchmarks/localization.py run --cases benchmarks/data/localization.jsonl \\
        --repo python-poetry/poetry=/work/.mirror/python-poetry+poetry/repo ... \\
        [--model offline] [--modes bm25,dense,hybrid] [--rankers chunks,no-tests,votes,subject,files]
        [--index-exclude 'tests/**/fixtures/'] [--out benchmarks/results/localization.json]

A case is a hit at k when any file the commit modified or deleted (a non-test source file that existed at
the parent) is among the first k distinct files. Files are ranked by their best chunk (``--rankers chunks``,
the headline), or by one of the variants measured beside it, or by ``CodeIndex.search_files`` where the
index has it (``files``). Repositories are read through
``codesift.data.commits`` (the reader of ``codesift data mine --commits``), which refuses SWE-bench's twelve.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

KS = (1, 5, 10)
MODES = ("bm25", "dense", "hybrid")
CHUNK_DEPTH = 100  # chunks asked per query when files are ranked from chunks

# (index, query, mode, limit) -> (paths best first, was the query truncated for the model)
FileRanker = Callable[..., tuple[list[str], bool]]


# ------------------------------------------------------------------------------------------- mine


# Messages about tooling, not behaviour (a lint pass, a formatter, the changelog; chore/style/ci/build/test
# commits), and files outside the library (examples, benchmarks, a sandbox, bundler configs) make no case:
# no intent leads to them. (None of the first 45 cases, mined before this rule, is affected by it.)
TOOLING_SUBJECT = re.compile(r"\b(lint(er|ing)?|formatter|golangci|clippy|autofix(es)?|changelog|contribution guide)\b"
                             r"|^(chore|style|ci|build|tests?)(\([^)]*\))?!?:", re.IGNORECASE)
NOT_LIBRARY = re.compile(r"(^|/)(examples?|benchmarks?|sandbox)/|(^|/)[^/]*\.config\.[cm]?[jt]s$"
                         r"|(^|/)(gulpfile|gruntfile)\.[jt]s$", re.IGNORECASE)


def eligible_case(commit, name: str, min_words: int, max_files: int) -> dict | None:
    """A localization case for a commit, or None: a meaningful message and 1..max_files source files changed."""
    from codesift.data.commits import clean_message, is_code_path, message_skip_reason

    query = clean_message(commit.message)
    subject = query.split("\n", 1)[0]
    if message_skip_reason(commit, query) or len(subject.split()) < min_words or TOOLING_SUBJECT.search(subject):
        return None
    code = [f for f in commit.files if is_code_path(f.path) and not NOT_LIBRARY.search(f.path)]
    targets = sorted(f.path for f in code if f.existed_before)
    if not targets or len(code) > max_files or commit.parent is None:
        return None
    return {
        "repo": name, "commit": commit.sha, "parent": commit.parent, "timestamp": commit.timestamp,
        "query": query, "files": targets, "added": sorted(f.path for f in code if not f.existed_before),
    }


def mine_cases(name: str, repo: Path, per_repo: int, rev: str = "HEAD", window: int = 600, min_words: int = 4,
               max_files: int = 5) -> list[dict]:
    """The ``per_repo`` newest eligible commits among the ``window`` newest commits before ``rev``, oldest first.

    Consecutive cases keep their parents close in time, so indexing them one after another re-embeds few
    files: the whole run costs about one full index per repository."""
    from codesift.data.commits import iter_commits, open_repository

    repo = open_repository(repo)
    found: list[dict] = []
    for commit in iter_commits(repo, rev, window):
        case = eligible_case(commit, name, min_words, max_files)
        if case:
            found.append(case)
            if len(found) == per_repo:
                break
    return sorted(found, key=lambda c: c["timestamp"])


# -------------------------------------------------------------------------------------------- run


def search_checked(index, query: str, mode: str, limit: int, **filters):
    """``index.search`` that survives a query over the model's limit: it is cut to fit and flagged."""
    try:
        return index.search(query, limit=limit, mode=mode, **filters), False
    except ValueError as exc:
        if "max_length" not in str(exc):
            raise
    emb = index.embedder
    ids = emb.tokenizer(query, add_special_tokens=False)["input_ids"]
    room = emb.max_length - len(emb.tokenizer(emb.prefix("nl2code", "query"))["input_ids"]) - 8
    cut = emb.tokenizer.decode(ids[: max(room, 16)])
    return index.search(cut, limit=limit, mode=mode, **filters), True


class MemoIndex:
    """A CodeIndex whose search answers are remembered: the rankings of one case share their searches."""

    def __init__(self, index) -> None:
        self._index = index
        self._memo: dict[tuple, list] = {}

    def search(self, query: str, limit: int = 10, mode: str = "hybrid", **filters):
        key = (query, limit, mode, tuple(sorted(filters.items())))
        if key not in self._memo:
            self._memo[key] = self._index.search(query, limit=limit, mode=mode, **filters)
        return self._memo[key]

    def __getattr__(self, name: str):
        return getattr(self._index, name)


def distinct_files(index, results) -> list[str]:
    """Root-relative paths of the results' files, each at the rank of its best chunk."""
    files: list[str] = []
    for r in results:
        path = index.relative_path(r.path)
        if path not in files:
            files.append(path)
    return files


def rank_files_by_chunks(index, query: str, mode: str, limit: int = 10) -> tuple[list[str], bool]:
    """Distinct files of the top chunks, each at the rank of its best chunk (the baseline)."""
    results, truncated = search_checked(index, query, mode, max(CHUNK_DEPTH, limit))
    return distinct_files(index, results)[:limit], truncated


def rank_files_without_tests(index, query: str, mode: str, limit: int = 10) -> tuple[list[str], bool]:
    """As the baseline, with test files filtered out before the cut (``exclude_tests=True``)."""
    results, truncated = search_checked(index, query, mode, max(CHUNK_DEPTH, limit), exclude_tests=True)
    return distinct_files(index, results)[:limit], truncated


def rank_files_by_chunk_votes(index, query: str, mode: str, limit: int = 10, k: float = 60.0) -> tuple[list[str], bool]:
    """Files by the sum of 1/(k + rank) over their chunks in the top 100: evidence from several chunks adds up."""
    results, truncated = search_checked(index, query, mode, max(CHUNK_DEPTH, limit))
    score: dict[str, float] = {}
    for rank, r in enumerate(results, start=1):
        path = index.relative_path(r.path)
        score[path] = score.get(path, 0.0) + 1.0 / (k + rank)
    return sorted(score, key=lambda p: -score[p])[:limit], truncated


def rank_files_by_subject(index, query: str, mode: str, limit: int = 10) -> tuple[list[str], bool]:
    """The baseline asked with the message's first line only."""
    return rank_files_by_chunks(index, query.split("\n", 1)[0], mode, limit)


def rank_files_by_api(index, query: str, mode: str, limit: int = 10) -> tuple[list[str], bool]:
    """Files from ``CodeIndex.search_files`` (the ``--files`` ranking of ``codesift search``)."""
    if not hasattr(index, "search_files"):
        raise SystemExit("error: this codesift has no CodeIndex.search_files; leave 'files' out of --rankers")
    hits = index.search_files(query, limit=limit, mode=mode)
    return [index.relative_path(h.path if hasattr(h, "path") else h["path"]) for h in hits], False


RANKERS: dict[str, FileRanker] = {
    "chunks": rank_files_by_chunks, "no-tests": rank_files_without_tests, "votes": rank_files_by_chunk_votes,
    "subject": rank_files_by_subject, "files": rank_files_by_api,
}


def git(work: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True, text=True).stdout


def prepare_work_tree(source: Path, work: Path) -> Path:
    """A clone of ``source`` (a mirror or a clone) whose work tree the run checks out commit by commit."""
    if not (work / ".git").exists():
        work.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(source), str(work)], check=True)
    return work


def model_slug(model: str) -> str:
    """A folder-name-safe tag of a model (its name and a hash of how it was given): one index per model and
    repository under ``--work``, so a second model re-uses the work trees and costs one index per repository."""
    import hashlib

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model).name or model).strip("-.") or "model"
    return f"{name[:40]}-{hashlib.sha1(model.encode()).hexdigest()[:8]}"


def first_rank(files: list[str], targets: list[str]) -> int | None:
    """1-based rank of the first target file, None when absent."""
    return next((i for i, f in enumerate(files, start=1) if f in targets), None)


def summarize(rows: list[dict], modes: tuple[str, ...]) -> dict:
    """Acc@k (a target file in the top k) and MRR@10 per mode."""
    out = {}
    for mode in modes:
        ranks = [r["ranks"][mode] for r in rows]
        n = max(len(ranks), 1)
        out[mode] = {f"acc@{k}": round(sum(1 for x in ranks if x is not None and x <= k) / n, 4) for k in KS}
        out[mode]["mrr@10"] = round(sum(1 / x for x in ranks if x is not None and x <= 10) / n, 4)
    return out


def run_repo(name: str, source: Path, cases: list[dict], args, embedder,
             on_case: Callable[[list[dict], dict], None] | None = None) -> tuple[list[dict], dict]:
    """Index ``source`` at each case's parent (oldest first, incrementally) and rank files for its message."""
    from codesift.index import IndexConfig, build_index, open_index

    work = prepare_work_tree(source, Path(args.work) / name.replace("/", "+"))
    index_dir = Path(args.work) / f"{name.replace('/', '+')}.{model_slug(args.model)}.index"
    config = IndexConfig(model=args.model, extra_excludes=tuple(args.index_exclude))
    rows, timing = [], {"index_s": [], "search_s": 0.0, "files_changed": [], "chunks_embedded": [], "chunks": 0}
    timing = {**timing, **getattr(args, "previous_timing", {}).get(name, {})}
    done = {r["commit"]: r for r in getattr(args, "previous_rows", []) if r["repo"] == name}
    rows = [done[c["commit"]] for c in cases if c["commit"] in done]
    index = None  # one CodeIndex per repository, refreshed at each parent: the store is opened once
    try:
        for case in sorted(cases, key=lambda c: c["timestamp"]):
            if case["commit"] in done:  # --resume: measured by the run that wrote --out
                continue
            git(work, "checkout", "-q", "--force", "--detach", case["parent"])
            git(work, "clean", "-fdxq")
            t = time.perf_counter()
            if index is None:
                if not (index_dir / "manifest.sqlite").is_file():
                    build_index(work, index_dir, config, embedder=embedder)
                index = open_index(index_dir, embedder=embedder)
            report = index.refresh()
            timing["index_s"].append(round(time.perf_counter() - t, 1))
            timing["files_changed"].append(report.files_changed + report.files_deleted)
            timing["chunks_embedded"].append(report.chunks_embedded)
            t = time.perf_counter()
            ranks, top, truncated = {}, {}, False
            timing["chunks"] = int(index.status(check_staleness=False).get("chunks", 0))
            view = MemoIndex(index)
            for ranker in args.rankers:
                for mode in args.modes:
                    files, cut = RANKERS[ranker](view, case["query"], mode, 10)
                    truncated |= cut
                    key = mode if ranker == args.rankers[0] else f"{ranker}/{mode}"
                    top[key] = files[:5]
                    ranks[key] = first_rank(files, case["files"])
            timing["search_s"] += time.perf_counter() - t
            rows.append({"repo": name, "commit": case["commit"], "files": case["files"], "ranks": ranks,
                         "query_truncated": truncated, "top": top})
            shown = " ".join(f"{m}={ranks[m] or '-'}" for m in args.modes)
            print(f"  {name} {case['commit'][:10]} {shown}  {case['query'].splitlines()[0][:70]}  "
                  f"(index {timing['index_s'][-1]} s, {report.chunks_embedded} chunks embedded)", file=sys.stderr)
            if on_case is not None:
                on_case(rows, timing)
    finally:
        if index is not None:
            index.close()
    return rows, timing


def table(summary: dict, per_repo: dict, n: int, modes: tuple[str, ...]) -> str:
    """Markdown: Acc@k and MRR per ranking, then Acc@5 per repository."""
    lines = [f"| ranking | Acc@1 | Acc@5 | Acc@10 | MRR@10 |  (n={n})", "|---|---|---|---|---|"]
    for mode in modes:
        s = summary[mode]
        lines.append(f"| {mode} | {s['acc@1']:.3f} | {s['acc@5']:.3f} | {s['acc@10']:.3f} | {s['mrr@10']:.3f} |")
    lines += ["", "| repo | n | " + " | ".join(f"{m} Acc@5" for m in modes) + " |", "|---" * (len(modes) + 2) + "|"]
    for repo, rs in per_repo.items():
        lines.append(f"| {repo} | {rs['n']} | " + " | ".join(f"{rs[m]['acc@5']:.3f}" for m in modes) + " |")
    return "\n".join(lines)


def run(args, embedder=None) -> dict:
    """Run every case; prints the table, writes ``args.out`` and returns the result."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from codesift.model.embedder import Embedder

    if Path(args.model).exists():  # the index remembers the model; keep it valid from any cwd
        args.model = str(Path(args.model).resolve())
    args.modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    args.rankers = tuple(r.strip() for r in args.rankers.split(",") if r.strip())
    unknown = [m for m in args.modes if m not in MODES] + [r for r in args.rankers if r not in RANKERS]
    if unknown or not args.modes or not args.rankers:
        raise SystemExit(f"error: unknown mode(s) or ranker(s) {unknown}; modes: {', '.join(MODES)}; "
                         f"rankers: {', '.join(RANKERS)}")
    cases = [json.loads(line) for line in Path(args.cases).read_text(encoding="utf-8").splitlines() if line.strip()]
    repos = dict(parse_repo(r) for r in args.repo)
    cases = [c for c in cases if c["repo"] in repos]  # a run may take a subset of the repositories
    if not cases:
        raise SystemExit(f"error: no case of {args.cases} is from {', '.join(repos)}; the --repo NAMEs must match "
                         "the cases' repo field")
    if args.limit_per_repo:
        cases = [c for name in repos for c in [c for c in cases if c["repo"] == name][: args.limit_per_repo]]
    args.previous_rows = []
    if args.resume and Path(args.out).is_file():
        previous = json.loads(Path(args.out).read_text(encoding="utf-8"))
        if previous["model"] != args.model or previous["rankers"] != list(args.rankers):
            raise SystemExit(f"error: {args.out} was written with another model or rankers; --resume needs the same")
        args.previous_rows, args.previous_timing = previous["rows"], previous["timing"]
    if embedder is None:
        embedder = Embedder(args.model)  # build_index embeds every chunk whatever the modes
    t0 = time.perf_counter()
    rows, timing = [], {}
    keys = tuple(m if r == args.rankers[0] else f"{r}/{m}" for r in args.rankers for m in args.modes)
    result: dict = {}
    for name, source in repos.items():
        repo_cases = [c for c in cases if c["repo"] == name]
        if repo_cases:
            print(f"{name}: {len(repo_cases)} cases", file=sys.stderr)
            def saved(repo_rows, repo_timing, name=name):  # after each case, so a partial run still counts
                save_result(args, rows + repo_rows, {**timing, name: repo_timing}, keys, time.perf_counter() - t0)

            got, timing[name] = run_repo(name, source, repo_cases, args, embedder, on_case=saved)
            rows.extend(got)
            result = save_result(args, rows, timing, keys, time.perf_counter() - t0)
    print(table(result["summary"], result["per_repo"], len(rows), keys))
    print(f"wrote {args.out} ({result['wall_s']} s)")
    return result


def save_result(args, rows: list[dict], timing: dict, keys: tuple[str, ...], wall_s: float) -> dict:
    """Summarise the rows so far and write them to ``args.out``."""
    summary = summarize(rows, keys)
    per_repo = {}
    for name in timing:
        mine_rows = [r for r in rows if r["repo"] == name]
        per_repo[name] = {"n": len(mine_rows), **summarize(mine_rows, keys)}
    result = {
        "benchmark": "localization", "model": args.model, "rankers": list(args.rankers), "cases": len(rows),
        "index_exclude": args.index_exclude, "queries_truncated": sum(r["query_truncated"] for r in rows),
        "summary": summary, "per_repo": per_repo, "timing": timing, "wall_s": round(wall_s, 1),
        "cases_file": str(args.cases), "command": " ".join(sys.argv), "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def parse_repo(raw: str) -> tuple[str, Path]:
    name, sep, path = raw.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"error: --repo takes NAME=PATH (e.g. owner/name=/path/to/mirror), got {raw!r}")
    return name, Path(path)


def mine(args) -> None:
    out = []
    for raw in args.repo:
        name, path = parse_repo(raw)
        path, _, rev = str(path).partition("@")
        try:
            cases = mine_cases(name, Path(path), args.per_repo, rev or "HEAD", args.window)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(f"{name}: {len(cases)} cases", file=sys.stderr)
        out.extend(cases)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for case in out:
            fh.write(json.dumps(case, ensure_ascii=False) + "\n")
    print(f"wrote {len(out)} cases to {args.out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mine", help="pick commits and write the cases JSONL")
    m.add_argument("--repo", action="append", required=True,
                   help="NAME=PATH[@COMMIT] of a git repository (repeatable); cases end at COMMIT (default HEAD)")
    m.add_argument("--per-repo", type=int, default=15)
    m.add_argument("--window", type=int, default=600, help="look at most this many commits back")
    m.add_argument("--out", default="benchmarks/data/localization.jsonl")
    r = sub.add_parser("run", help="index at each parent and measure file-level Acc@k")
    r.add_argument("--cases", default="benchmarks/data/localization.jsonl")
    r.add_argument("--repo", action="append", required=True, help="NAME=PATH of a case's repository (repeatable)")
    r.add_argument("--model", default=os.environ.get("CODESIFT_MODEL", "offline"))
    r.add_argument("--modes", default=",".join(MODES))
    r.add_argument("--rankers", default="chunks",
                   help="file rankings to measure, the first is the headline (chunks: best chunk; no-tests: tests "
                        "filtered out; votes: sum of 1/(60+rank) over a file's chunks; subject: first line only; "
                        "files: CodeIndex.search_files)")
    r.add_argument("--index-exclude", action="append", default=[],
                   help="gitignore-style pattern left out of every index (repeatable), e.g. 'tests/**/fixtures/'")
    r.add_argument("--resume", action="store_true", help="keep the cases already in --out, run the others")
    r.add_argument("--limit-per-repo", type=int, default=0,
                   help="only the first N cases of each repository (smoke runs)")
    r.add_argument("--work", default="/tmp/codesift-localization", help="work trees and indexes (kept for re-runs)")
    r.add_argument("--out", default="benchmarks/results/localization.json")
    c = sub.add_parser("combine", help="join the JSON of several runs (same model) into one result")
    c.add_argument("results", nargs="+")
    c.add_argument("--out", default="benchmarks/results/localization.json")
    return ap.parse_args(argv)


def combine(args) -> dict:
    """One result from several runs' JSON (e.g. one process per repository): rows joined, summary recomputed."""
    parts = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.results]
    models = {p["model"] for p in parts}
    if len(models) != 1:
        raise SystemExit(f"error: the results come from different models {sorted(models)}; combine one model's runs")
    rows = [row for p in parts for row in p["rows"]]
    keys = tuple(parts[0]["summary"])
    timing = {name: t for p in parts for name, t in p["timing"].items()}
    ns = argparse.Namespace(out=args.out, model=parts[0]["model"], rankers=parts[0]["rankers"],
                            index_exclude=parts[0].get("index_exclude", []), cases=parts[0]["cases_file"])
    result = save_result(ns, rows, timing, keys, sum(p["wall_s"] for p in parts))
    result["combined_from"] = [str(p) for p in args.results]
    result["commands"] = [p["command"] for p in parts]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result["summary"], result["per_repo"], len(rows), keys))
    print(f"wrote {args.out}")
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    {"mine": mine, "run": run, "combine": combine}[args.command](args)


if __name__ == "__main__":
    main()
