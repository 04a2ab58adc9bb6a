"""Time-split localization for `codesift tune` (issue 20): does tuning on a repository's own history help
on the commits that came after it?

For each repository of the localization benchmark: lay it out at the parent of its first case (so every case
is a later commit, never seen by the tune), run `codesift tune` there as a user would (timed, its own
held-out split), then run the repository's cases with the untuned and with the tuned model.

    python benchmarks/tune_localization.py --repo tox-dev/tox=/work/.mirror/tox-dev+tox/repo [--repo ...] \\
        [--minutes 10] [--rankers files] [--work /tmp/codesift-tune-localization] \\
        [--out benchmarks/results/tune_localization.json]

The base is the default model (what `codesift tune` starts from on a fresh index). A re-run reuses the tuned
models and the localization results already under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localization  # the benchmark this one extends: cases, work trees, the run itself


def model_bytes(folder: Path) -> int:
    """Bytes of a model folder's weight files."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin", ".onnx", ".gguf"})


def run_tune(name: str, source: Path, cutoff: str, args) -> dict:
    """`codesift tune` on a clone of ``source`` at ``cutoff``; its --json summary plus the wall time."""
    slug = name.replace("/", "+")
    work = Path(args.work)
    summary_path = work / f"{slug}.tune.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text(encoding="utf-8"))
    tree = localization.prepare_work_tree(source, work / f"{slug}+tune")
    localization.git(tree, "checkout", "-q", "--force", "--detach", cutoff)
    localization.git(tree, "clean", "-fdxq")
    command = [str(Path(sys.executable).parent / "codesift"), "tune", str(tree), "--index", str(work / f"{slug}.tune-index"),
               "--minutes", str(args.minutes), "--out", str(work / f"{slug}.tuned"), "--json"]
    print(f"{name}: tuning at {cutoff[:12]} ({args.minutes} min budget)", file=sys.stderr)
    t0 = time.perf_counter()
    done = subprocess.run(command, check=False, stdout=subprocess.PIPE, text=True,  # its progress shows on stderr
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"error: codesift tune failed on {name} (exit {done.returncode}); its messages are above")
    summary = json.loads(done.stdout)
    summary["wall_s"] = round(wall, 1)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def run_cases(name: str, source: Path, model: str, tag: str, args) -> dict:
    """The repository's localization cases with ``model`` (resumable), through benchmarks/localization.py."""
    slug = name.replace("/", "+")
    ns = localization.parse_args(["run", "--cases", args.cases, "--repo", f"{name}={source}", "--model", model,
                                  "--rankers", args.rankers, "--work", args.work, "--resume",
                                  "--out", str(Path(args.work) / f"{slug}.{tag}.localization.json")])
    return localization.run(ns)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repo", action="append", required=True, help="NAME=PATH of a case's repository (repeatable)")
    ap.add_argument("--cases", default="benchmarks/data/localization.jsonl")
    ap.add_argument("--minutes", type=float, default=10.0, help="`codesift tune --minutes` (the default budget)")
    ap.add_argument("--rankers", default="files", help="localization.py's rankers; the first is the headline")
    ap.add_argument("--work", default="/tmp/codesift-tune-localization")
    ap.add_argument("--out", default="benchmarks/results/tune_localization.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from codesift.model.loading import default_model
    from codesift.model.shipped import shipped_model_path

    base = default_model()
    base_dir = shipped_model_path(base) or Path(base)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    cases = [json.loads(line) for line in Path(args.cases).read_text(encoding="utf-8").splitlines() if line.strip()]
    per_repo: dict[str, dict] = {}
    for name, source in (localization.parse_repo(r) for r in args.repo):
        mine = sorted((c for c in cases if c["repo"] == name), key=lambda c: c["timestamp"])
        if not mine:
            raise SystemExit(f"error: no case of {args.cases} is from {name}")
        tune = run_tune(name, source, mine[0]["parent"], args)
        tuned_dir = Path(args.work) / f"{name.replace('/', '+')}.tuned"
        before = run_cases(name, source, base, "base", args)
        after = run_cases(name, source, str(tuned_dir), "tuned", args)
        per_repo[name] = {
            "n": len(mine), "cutoff": mine[0]["parent"], "base": before["summary"], "tuned": after["summary"],
            "tune": {k: tune.get(k) for k in ("usable_commits", "held_out_commits", "pairs", "before", "after",
                                             "steps", "installed", "minutes", "wall_s")},
            "model_bytes": {"base": model_bytes(base_dir) if base_dir.exists() else None,
                            "tuned": model_bytes(tuned_dir)},
        }
        save(args, base, per_repo)
    result = save(args, base, per_repo)
    print(table(result))
    return result


def pooled(per_repo: dict, which: str) -> dict:
    """Acc@k per mode over all cases (repositories weighted by their case counts)."""
    n = sum(r["n"] for r in per_repo.values())
    modes = next(iter(per_repo.values()))[which]
    return {m: {k: round(sum(r[which][m][k] * r["n"] for r in per_repo.values()) / n, 4) for k in modes[m]}
            for m in modes}


def save(args, base: str, per_repo: dict) -> dict:
    result = {"benchmark": "tune_localization", "base_model": base, "minutes": args.minutes, "rankers": args.rankers,
              "cases": sum(r["n"] for r in per_repo.values()), "base": pooled(per_repo, "base"),
              "tuned": pooled(per_repo, "tuned"), "per_repo": per_repo, "command": " ".join(sys.argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def table(result: dict) -> str:
    """Markdown: Acc@5 per mode, untuned -> tuned, per repository and pooled; tune time and held-out figures."""
    modes = list(result["base"])
    lines = ["| repository | n | " + " | ".join(f"{m} Acc@5 (base -> tuned)" for m in modes)
             + " | tune min | held-out Acc@5 (base -> tuned) | installed |", "|---" * (len(modes) + 5) + "|"]
    for name, r in result["per_repo"].items():
        t = r["tune"]
        lines.append(f"| {name} | {r['n']} | "
                     + " | ".join(f"{r['base'][m]['acc@5']:.3f} -> {r['tuned'][m]['acc@5']:.3f}" for m in modes)
                     + f" | {t['wall_s'] / 60:.1f} | {t['before']['acc@5']:.2f} -> {t['after']['acc@5']:.2f}"
                     f" | {t['installed']} |")
    lines.append(f"| **all** | {result['cases']} | "
                 + " | ".join(f"{result['base'][m]['acc@5']:.3f} -> {result['tuned'][m]['acc@5']:.3f}" for m in modes)
                 + " | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
