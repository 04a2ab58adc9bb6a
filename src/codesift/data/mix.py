"""A training mix: chosen counts of pairs from several pair files, decontaminated once more as a whole.

The paper trains on many datasets, one per batch; which datasets and how much of each is a choice a
run must record. A mix spec (YAML) names each component (a pair file, optionally one task of it, a
count), and :func:`build_mix` samples them deterministically, holds out a few pairs of each
component as a small BEIR folder (for sweeps and dev curves that never touch an evaluation set),
and drops any pair that matches an evaluation text, whichever file it came from.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from codesift.data.jsonl import read_jsonl
from codesift.tasks import TASKS


@dataclass
class MixComponent:
    """One ingredient: ``count`` pairs of ``file`` (only ``task`` rows when given)."""

    name: str
    file: str
    count: int
    task: str | None = None
    language: str | None = None  # only rows of this language (mined pairs carry one)
    source: str | None = None    # only rows of this source
    keep_source: bool = False   # batch by the rows' own source (e.g. one library) instead of by component
    holdout: int | None = None  # pairs held out for validation (None: the spec's default)


@dataclass
class MixSpec:
    """The whole recipe of a training mix."""

    components: list[MixComponent]
    seed: int = 0
    holdout: int = 0
    exclude: list[str] = field(default_factory=list)   # BEIR folders (globs) to decontaminate against

    @classmethod
    def from_yaml(cls, path: str | Path) -> MixSpec:
        """Read a mix spec; relative paths are taken from the spec's folder."""
        import glob

        from codesift.data.yamlfile import read_yaml_mapping

        p = Path(path)
        raw = read_yaml_mapping(p, "mix spec")
        if not isinstance(raw.get("components"), list) or not raw["components"]:
            raise ValueError(f"{p}: expected a mapping with a non-empty `components:` list")
        base = p.parent

        def rel(x: str) -> str:
            return str(x if Path(x).is_absolute() else base / x)

        comps = []
        for i, c in enumerate(raw["components"]):
            try:
                comp = MixComponent(**c)
            except TypeError as exc:
                raise ValueError(f"{p}: component {i + 1}: {exc}") from None
            comp.file = rel(comp.file)
            if comp.task is not None:
                comp.task = TASKS.get(comp.task).name
            comps.append(comp)
        excludes = sorted({d for pattern in raw.get("exclude", []) for d in glob.glob(rel(pattern))})
        return cls(comps, int(raw.get("seed", 0)), int(raw.get("holdout", 0)), excludes)


@dataclass
class MixReport:
    """What each component gave: available rows, taken, held out, dropped as evaluation duplicates."""

    rows: list[dict] = field(default_factory=list)

    def markdown(self) -> str:
        """The report as a Markdown table."""
        head = "| component | task | available | train | held out | dropped (eval duplicate) |\n|---|---|---|---|---|---|\n"
        body = "".join(f"| {r['name']} | {r['task']} | {r['available']:,} | {r['train']:,} | {r['holdout']:,} | "
                       f"{r['contaminated']:,} |\n" for r in self.rows)
        total = sum(r["train"] for r in self.rows)
        return head + body + f"| **total** | | | **{total:,}** | | |\n"


def _read_rows(comp: MixComponent) -> list[dict]:
    path = Path(comp.file)
    if not path.is_file():
        raise FileNotFoundError(f"mix component {comp.name}: {path} does not exist")
    rows = []
    for _, row in read_jsonl(path):
        if (comp.task is None or row.get("task") == comp.task) and \
                (comp.language is None or row.get("language") == comp.language) and \
                (comp.source is None or row.get("source") == comp.source):
            rows.append(row)
    return rows


def write_beir(folder: Path, rows: list[dict], task: str) -> None:
    """A BEIR folder whose query i has document i as its one relevant document."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as q, (folder / "corpus.jsonl").open("w", encoding="utf-8") as c:
        for i, r in enumerate(rows):
            q.write(json.dumps({"_id": f"q{i}", "text": r["query"]}) + "\n")
            c.write(json.dumps({"_id": f"d{i}", "text": r["document"]}) + "\n")
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(rows))))
    (folder / "task.json").write_text(json.dumps({"task": task, "description": "held out from the training mix"}))


def build_mix(spec: MixSpec, out: str | Path, holdout_dir: str | Path | None = None, decontaminator=None) -> MixReport:
    """Write the mix JSONL (and held-out BEIR folders); rows keep their fields, ``source`` names the batch group."""
    if decontaminator is None and spec.exclude:
        from codesift.data.decontam import Decontaminator

        decontaminator = Decontaminator.from_beir(spec.exclude)
    rng = random.Random(spec.seed)
    report = MixReport()
    taken: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for comp in spec.components:
        rows = _read_rows(comp)
        available = len(rows)
        rng.shuffle(rows)
        n_hold = spec.holdout if comp.holdout is None else comp.holdout
        kept, held, dirty = [], [], 0
        for r in rows:
            if len(kept) >= comp.count and len(held) >= n_hold:
                break
            key = (r["query"], r["document"])
            if key in seen:
                continue
            if decontaminator is not None and decontaminator.contaminated(r["query"], r["document"]):
                dirty += 1
                continue
            seen.add(key)
            if len(held) < n_hold:
                held.append(r)
            else:
                r = dict(r)
                if not comp.keep_source:
                    r["source"] = comp.name
                kept.append(r)
        task = comp.task or (kept[0]["task"] if kept else "nl2code")
        if held and holdout_dir is not None:
            write_beir(Path(holdout_dir) / comp.name, held, task)
        taken += kept
        report.rows.append({"name": comp.name, "task": comp.task or "all", "available": available,
                            "train": len(kept), "holdout": len(held), "contaminated": dirty})
    rng.shuffle(taken)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in taken:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return report
