"""Index about a million lines of real code with the default model: wall time, throughput and peak memory.

    python benchmarks/index_large.py [--lines 1000000] [--extra DIR ...] [--model MODEL]
                                     [--work /tmp/cs_large] [--out benchmarks/results/index_large.json]

The tree is the installed Python standard library (every ``*.py`` under its ``Lib``, tests included,
``site-packages`` left out), then each ``--extra`` source tree (e.g. ``git archive`` of a public
repository), copied file by file in name order until ``--lines`` lines. ``codesift index`` then runs on
it as a separate process, exactly as a user runs it (its progress goes to this process's stderr); the
figures are its wall time, its peak resident memory (``getrusage`` of the child), and the index
report (``--json``). Run it on an idle machine: embedding is most of the time.

A run that is stopped (Ctrl-C, a kill) resumes: the tree is kept in ``--work`` and ``codesift index``
completes the index it left, so ``--resume`` reports the second part only (the figures say so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SOURCE_SUFFIXES = (".py", ".pyi", ".rs", ".go", ".js", ".ts", ".java", ".c", ".h", ".cpp")


def source_files(root: Path) -> list[Path]:
    """The source files of a tree in name order (no site-packages, no hidden folders)."""
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if (path.is_file() and path.suffix in SOURCE_SUFFIXES and "site-packages" not in rel
                and not any(p.startswith(".") or p == "__pycache__" for p in rel)):
            out.append(path)
    return out


def make_tree(tree: Path, sources: list[tuple[str, Path]], lines: int) -> dict:
    """Copy files of each (name, root) into ``tree/name`` until ``lines`` lines; returns the counts."""
    counts = {"files": 0, "lines": 0, "by_source": {}}
    for name, root in sources:
        n_files = n_lines = 0
        for path in source_files(root):
            if counts["lines"] >= lines:
                break
            text = path.read_text(encoding="utf-8", errors="replace")
            dest = tree / name / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
            n_files += 1
            n_lines += text.count("\n")
            counts["files"] += 1
            counts["lines"] += text.count("\n")
        counts["by_source"][name] = {"root": str(root), "files": n_files, "lines": n_lines}
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--extra", action="append", default=[], help="another source tree to add after the stdlib")
    ap.add_argument("--model", default=None, help="default: what `codesift index` picks (codesift-mini on a CPU)")
    ap.add_argument("--work", default="/tmp/cs_large")
    ap.add_argument("--resume", action="store_true", help="keep the tree and the index of a stopped run")
    ap.add_argument("--out", default="benchmarks/results/index_large.json")
    args = ap.parse_args()

    work = Path(args.work)
    tree, index_dir = work / "tree", work / "index"
    stdlib = Path(os.__file__).parent
    sources = [("stdlib", stdlib)] + [(Path(e).name, Path(e)) for e in args.extra]
    for e in args.extra:
        if not Path(e).is_dir():
            sys.exit(f"--extra {e} is not a folder; pass a source tree (e.g. a `git archive` of a repository)")
    if args.resume and not (work / "tree.json").is_file():
        sys.exit(f"nothing to resume in {work}; run without --resume first")
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
        counts = make_tree(tree, sources, args.lines)
        (work / "tree.json").write_text(json.dumps(counts))
    else:
        counts = json.loads((work / "tree.json").read_text())
    print(f"tree: {counts['files']} files, {counts['lines']} lines in {tree}", file=sys.stderr, flush=True)

    exe = shutil.which("codesift", path=str(Path(sys.executable).parent)) or "codesift"
    cmd = [exe, "index", str(tree), "--index", str(index_dir), "--json"]
    if args.model:
        cmd += ["--model", args.model]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr (progress) passes through
    seconds = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode:
        sys.exit(f"codesift index exited with {proc.returncode}")
    report = json.loads(proc.stdout)
    chunks = report.get("chunks_embedded") or report.get("chunks_total")
    result = {
        "command": " ".join(["benchmarks/index_large.py", *sys.argv[1:]]),
        "tree": counts, "resumed": args.resume, "index_command": " ".join(["codesift", *cmd[1:]]),
        "seconds": round(seconds, 1), "minutes": round(seconds / 60, 1),
        "lines_per_s": round(counts["lines"] / seconds, 1),
        "chunks_per_s": round(chunks / seconds, 2) if chunks else None,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "index_mb": round(sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file()) / 2**20, 1),
        "report": report,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_end": os.getloadavg()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds", "lines_per_s", "chunks_per_s", "peak_rss_mb", "index_mb")}))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
