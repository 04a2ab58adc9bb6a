"""Retrieval tasks in the BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels.tsv`` and an optional ``task.json``.

``task.json`` names the instruction task (``nl2code``, ``qa``, ...) whose prefixes embed the queries and
documents, and may carry the nDCG@10 figures the paper reports for the benchmark (``paper_ndcg_at_10``).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from codesift.data.jsonl import read_jsonl

logger = logging.getLogger(__name__)

DEFAULT_TASK = "nl2code"


@dataclass
class RetrievalTask:
    """One retrieval benchmark: documents, queries, graded relevance judgements and its instruction task."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    task: str = DEFAULT_TASK
    paper_ndcg_at_10: dict[str, float] = field(default_factory=dict)
    description: str = ""
    path: Path | None = None

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in corpus order (the row order of the corpus embedding matrix)."""
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        """Ids of the queries that are evaluated (those with at least one relevant document), in file order."""
        return list(self.queries)


def _read_jsonl(path: Path, join_title: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, row in read_jsonl(path):
        try:
            _id = str(row["_id"])
            text = row.get("text") or ""
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}:{lineno}: expected a JSON object with '_id' and 'text' ({exc!r})") from None
        title = (row.get("title") or "") if join_title else ""
        # BEIR joins a document's title and text with a space.
        out[_id] = f"{title} {text}" if title else text
        if not out[_id].strip():
            logger.warning("%s:%d: empty text for id %r", path, lineno, _id)
    return out


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read a TREC/BEIR qrels TSV (``query-id<TAB>corpus-id<TAB>score``, header optional)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) == 4:  # TREC layout: qid, iteration, docid, rel
                row = [row[0], row[2], row[3]]
            if len(row) != 3:
                raise ValueError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score', got {row!r}")
            try:
                score = int(float(row[2]))
            except ValueError:
                if lineno == 1:  # header line
                    continue
                raise ValueError(f"{path}:{lineno}: score {row[2]!r} is not a number") from None
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


_LAYOUT = "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels.tsv or qrels/test.tsv, task.json optional"


def _qrels_path(root: Path) -> Path | None:
    return next((p for p in (root / "qrels.tsv", root / "qrels" / "test.tsv") if p.is_file()), None)


def _not_a_task_folder(root: Path, missing: list[str]) -> str:
    """Why ``root`` is not a BEIR folder, what one holds, and the BEIR folders inside it when there are some."""
    if not root.exists():
        return f"{root} does not exist; pass a BEIR folder ({_LAYOUT})"
    if not root.is_dir():
        return f"{root} is a file, not a folder; pass a BEIR folder ({_LAYOUT})"
    inside = sorted(d.name for d in root.iterdir() if d.is_dir() and (d / "corpus.jsonl").is_file() and _qrels_path(d))
    if inside:
        shown = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "")
        return f"{root} is not a BEIR folder but holds {len(inside)}: {shown}; pass each of them (e.g. {root / inside[0]})"
    return f"{root} is not a BEIR folder: it has no {', '.join(missing)} ({_LAYOUT})"


def load_beir_task(path: str | Path, task: str | None = None) -> RetrievalTask:
    """Load a BEIR-layout folder; ``task`` overrides the instruction task named in its ``task.json``."""
    root = Path(path)
    files = {name: root / name for name in ("corpus.jsonl", "queries.jsonl")}
    qrels_path = _qrels_path(root)
    missing = [n for n, p in files.items() if not p.is_file()] + ([] if qrels_path else ["qrels.tsv"])
    if missing:
        raise FileNotFoundError(_not_a_task_folder(root, missing))

    meta: dict = {}
    if (root / "task.json").is_file():
        try:
            meta = json.loads((root / "task.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{root / 'task.json'}: not valid JSON ({exc})") from None
    task_name = task or meta.get("task") or DEFAULT_TASK
    from codesift.tasks import resolve_task

    resolve_task(task_name)  # raises ValueError naming the valid tasks

    corpus = _read_jsonl(files["corpus.jsonl"], join_title=True)
    all_queries = _read_jsonl(files["queries.jsonl"], join_title=False)
    raw_qrels = read_qrels(qrels_path)

    qrels: dict[str, dict[str, int]] = {}
    unknown_docs = 0
    for qid, rels in raw_qrels.items():
        if qid not in all_queries:
            continue
        kept = {d: s for d, s in rels.items() if d in corpus}
        unknown_docs += len(rels) - len(kept)
        if any(s > 0 for s in kept.values()):
            qrels[qid] = kept
    if unknown_docs:
        logger.warning("%s: %d qrels name documents missing from corpus.jsonl; ignored", root, unknown_docs)
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    if not queries:
        raise ValueError(f"{root}: no query has a relevant document in {qrels_path.name}; check that the ids match")
    if not corpus:
        raise ValueError(f"{root}: corpus.jsonl is empty")
    return RetrievalTask(
        name=meta.get("name") or root.name,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        task=task_name,
        paper_ndcg_at_10={str(k): float(v) for k, v in (meta.get("paper_ndcg_at_10") or {}).items()},
        description=meta.get("description", ""),
        path=root,
    )
