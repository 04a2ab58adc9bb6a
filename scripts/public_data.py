"""Public training splits of code-retrieval sets -> codesift pair JSONL, decontaminated.

A one-off data-preparation program (codesift does not need it at run time). It reads the files from
bare git snapshots of public repositories (``/work/.mirror/<owner>+<name>/repo`` by default, as the
``fetch`` tool lays them out) at pinned commits, converts each training split to pair rows
(the format of ``codesift.data.mining.Pair.to_json``), and drops every pair whose query, document or
both together match, exactly or nearly, a text of an evaluation set:

- the BEIR folders of ``--retrieval`` (the four dev sets codesift reports on), and
- BEIR-like folders that this program writes to ``--evalsets`` from the public dev/test splits it can
  read (Spider dev, Spider-Syn dev, CoSQA dev/test, WebQueryTest, StaQC dev/test, CodeTrans valid/test,
  CoNaLa test, text2sql-data dev/test, WikiSQL dev/test).

Writes ``<out>/<name>.jsonl`` per dataset and ``<out>/stats.json`` (pairs read, kept before and after
decontamination, drops per evaluation folder). Every source is recorded in DATA.md.

    PYTHONPATH=src python scripts/public_data.py --out ../main/work/public --evalsets ../main/work/evalsets
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from codesift.data.decontam import Decontaminator
from codesift.data.mining import Pair, text_hash

CAP = 30_000  # pairs per dataset at most (a random sample above it)


@dataclass(frozen=True)
class Snapshot:
    """One file set of a public repository at a pinned commit."""

    repo: str  # owner/name
    commit: str

    def read(self, mirror: Path, path: str) -> str:
        git_dir = mirror / self.repo.replace("/", "+") / "repo"
        if not git_dir.is_dir():
            raise FileNotFoundError(f"{git_dir} is missing: fetch github:{self.repo} first")
        out = subprocess.run(
            ["git", "-C", str(git_dir), "show", f"{self.commit}:{path}"], capture_output=True, check=False
        )
        if out.returncode != 0:
            raise FileNotFoundError(f"{self.repo}@{self.commit[:7]} {path}: {out.stderr.decode().strip()}")
        return out.stdout.decode("utf-8")

    def json(self, mirror: Path, path: str) -> object:
        return json.loads(self.read(mirror, path))

    def lines(self, mirror: Path, path: str) -> list[str]:
        return self.read(mirror, path).split("\n")[:-1]  # files end with a newline


COCLR = Snapshot("Jun-jie-Huang/CoCLR", "14ebcacf9e9bc3e7109102632bc63047876f27d2")
COSQA_TRAIN = Snapshot("rlucas7/code-searcher", "8d9c9aae4c2b2b68ec8876b409cd758e1f10dd90")
CODEXGLUE = Snapshot("microsoft/CodeXGLUE", "ac74a62802a0dd159b3258c78a2df8ad36cdf2b9")
CODEXGLUE_STAQC = Snapshot("microsoft/CodeXGLUE", "32e497e8345ecfc6e5295c90c5dca5212d6bf44a")  # removed later
CONALA = Snapshot("shilliscmu/TranxConalaBaseline", "5520285387d946e826f4cc5a4a0a1bf7361355e5")
SPIDER = Snapshot("taoyds/spider", "b7b5b8c890cd30e35427348bb9eb8c6d1350ca7c")
TEXT2SQL = Snapshot("jkkummerfeld/text2sql-data", "5050bad2309a93636ea4788d3660c9202bf11e0e")
SPIDER_SYN = Snapshot("ygan/Spider-Syn", "0b996a57b7e329c14c300a8fb13661da128a9ddc")
WIKISQL_V2 = Snapshot("MongoDB-NLQ/WikiSQLv2", "858cd9abfdcb3989e8f4b2d134f3e5001271af88")
SPIDER_TRAIN = Snapshot("tjhalanigrid/Text2Sql", "2a9e09db9bdd0879b81ef3cf0b4a0136a60f027a")  # question/query/db_id

Rows = Iterator[tuple[str, str]]  # (query, document)


# ---- training splits --------------------------------------------------------------------------


def cosqa_train(mirror: Path) -> Rows:
    """CoSQA train (20,000 web queries x Python functions, in five pieces); label 1 only."""
    for i in range(1, 6):
        for row in COSQA_TRAIN.json(mirror, f"cosqa-train-{i}.json"):
            if int(row["label"]) == 1:
                yield row["doc"], row["code"]


def spider_train(mirror: Path) -> Rows:
    """Spider train_spider.json (7,000 questions -> gold SQL), as the dev set: question -> SQL."""
    for row in SPIDER_TRAIN.json(mirror, "data/train_spider.json"):
        yield row["question"], row["query"]


def spider_syn_train(mirror: Path) -> Rows:
    """Spider-Syn train: Spider train questions with schema words replaced by synonyms -> the same SQL.

    Only the rows whose question was changed (the unchanged ones are spider-train already).
    """
    for row in SPIDER_SYN.json(mirror, "Spider-Syn/train_spider.json"):
        if row["SpiderSynQuestion"].strip() != row["SpiderQuestion"].strip():
            yield row["SpiderSynQuestion"], row["query"]


# text2sql-data sets with a train/dev/test split: pairs that are train in both the question and the query
# split; the cross-validation sets (folds "0".."9", no test split) are those Spider ships as train_others.
# ATIS is left out: it derives from the LDC release, whose licence does not allow redistribution.
TEXT2SQL_SPLIT = ("advising", "geography", "scholar")
TEXT2SQL_FOLDS = ("restaurants", "academic", "imdb", "yelp")


def _fill(text: str, values: dict[str, str]) -> str:
    """Put the example values in place of the variable names (longest name first: city_name10 before city_name1)."""
    for name in sorted(values, key=len, reverse=True):
        text = text.replace(name, values[name])
    return text


def _text2sql_rows(mirror: Path, name: str, keep: Callable[[dict, dict], bool]) -> Rows:
    for entry in TEXT2SQL.json(mirror, f"data/{name}.json"):
        sql = min(entry["sql"], key=len)  # the variants are equivalent; the shortest reads best
        defaults = {v["name"]: v["example"] for v in entry["variables"]}
        for sentence in entry["sentences"]:
            if keep(entry, sentence):
                values = {**defaults, **sentence["variables"]}
                yield _fill(sentence["text"], values), _fill(sql, values)


def text2sql_train(mirror: Path) -> Rows:
    """Finegan-Dollak et al.'s text2sql-data: question -> SQL, train split only (see TEXT2SQL_SPLIT)."""
    for name in TEXT2SQL_SPLIT:
        yield from _text2sql_rows(
            mirror, name, lambda e, s: e["query-split"] == "train" and s["question-split"] == "train"
        )
    for name in TEXT2SQL_FOLDS:
        yield from _text2sql_rows(mirror, name, lambda e, s: True)


def codetrans_train(mirror: Path) -> Rows:
    """CodeXGLUE code-to-code-trans train: Java method -> its C# translation (line-aligned files)."""
    base = "Code-Code/code-to-code-trans/data/train.java-cs.txt"
    java, cs = CODEXGLUE.lines(mirror, base + ".java"), CODEXGLUE.lines(mirror, base + ".cs")
    if len(java) != len(cs):
        raise ValueError(f"codetrans: {len(java)} Java lines but {len(cs)} C# lines")
    yield from zip(java, cs)


def conala_train(mirror: Path) -> Rows:
    """CoNaLa curated train (2,379 StackOverflow intents -> Python snippets); the rewritten intent when set."""
    for row in CONALA.json(mirror, "conala-train.json"):
        yield row.get("rewritten_intent") or row["intent"], row["snippet"]


def staqc_train(mirror: Path) -> Rows:
    """StaQC train as CodeXGLUE shipped it: StackOverflow question title -> answer code; label 1 only."""
    for row in CODEXGLUE_STAQC.json(mirror, "Text-Code/NL-code-search-WebQuery/data/train_staqc.json"):
        if int(row["label"]) == 1:
            yield row["doc"], row["code"]


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str
    language: str
    rows: Callable[[Path], Rows]


DATASETS = {
    d.name: d
    for d in (
        Dataset("spider-train", "nl2code", "sql", spider_train),
        Dataset("spider-syn-train", "nl2code", "sql", spider_syn_train),
        Dataset("text2sql-data-train", "nl2code", "sql", text2sql_train),
        Dataset("cosqa-train", "nl2code", "python", cosqa_train),
        Dataset("codetrans-java-cs-train", "code2code", "csharp", codetrans_train),
        Dataset("conala-train", "nl2code", "python", conala_train),
        Dataset("staqc-train", "qa", "python", staqc_train),
    )
}


# ---- evaluation splits (decontamination only) -------------------------------------------------


def _cosqa_json(snapshot: Snapshot, path: str) -> Callable[[Path], Rows]:
    return lambda mirror: ((r["doc"], r["code"]) for r in snapshot.json(mirror, path))


def _spider_dev(mirror: Path) -> Rows:
    for row in SPIDER.json(mirror, "evaluation_examples/examples/dev.json"):
        yield row["question"], row["query"]


def _spider_syn_dev(mirror: Path) -> Rows:
    for row in SPIDER_SYN.json(mirror, "Spider-Syn/dev.json"):
        yield row["SpiderSynQuestion"], row["query"]
    for name in ("Adv(BERT)", "Adv(GLOVE)"):  # adversarial rewrites of the dev questions
        for row in SPIDER_SYN.json(mirror, f"WorstCaseDevSet/{name}.json"):
            yield row["question"], row["query"]


def _wikisql_heldout(mirror: Path) -> Rows:
    """WikiSQL dev and test questions with their SQL written out (``SELECT agg(col) FROM table WHERE ...``)."""
    for split in ("dev", "test"):
        for line in WIKISQL_V2.lines(mirror, f"dataset/{split}.jsonl"):
            row = json.loads(line)
            sql = row["sql"]
            select = f"{sql['agg']}({sql['sel']})" if sql["agg"] else sql["sel"]
            where = " AND ".join(f"{col} {op} {val}" for col, op, val in sql["conds"])
            yield row["question"], f"SELECT {select} FROM table" + (f" WHERE {where}" if where else "")


def _codetrans(split: str) -> Callable[[Path], Rows]:
    base = f"Code-Code/code-to-code-trans/data/{split}.java-cs.txt"
    return lambda mirror: zip(CODEXGLUE.lines(mirror, base + ".java"), CODEXGLUE.lines(mirror, base + ".cs"))


def _text2sql_heldout(mirror: Path) -> Rows:
    held_out = ("dev", "test", "exclude")
    for name in TEXT2SQL_SPLIT + ("atis",):
        yield from _text2sql_rows(
            mirror, name, lambda e, s: e["query-split"] in held_out or s["question-split"] in held_out
        )


def _conala_test(mirror: Path) -> Rows:
    for row in CONALA.json(mirror, "conala-test.json"):
        yield row.get("rewritten_intent") or row["intent"], row["snippet"]
        yield row["intent"], row["snippet"]


EVALSETS: dict[str, Callable[[Path], Rows]] = {
    "spider-dev-full": _spider_dev,
    "spider-syn-dev": _spider_syn_dev,
    "cosqa-retrieval-dev": _cosqa_json(COCLR, "data/search/cosqa-retrieval-dev-500.json"),
    "cosqa-retrieval-test": _cosqa_json(COCLR, "data/search/cosqa-retrieval-test-500.json"),
    "cosqa-qa-dev": _cosqa_json(COCLR, "data/qa/cosqa-dev.json"),
    "webquery-test": _cosqa_json(CODEXGLUE, "Text-Code/NL-code-search-WebQuery/data/test_webquery.json"),
    "staqc-dev": _cosqa_json(CODEXGLUE_STAQC, "Text-Code/NL-code-search-WebQuery/data/dev_staqc.json"),
    "staqc-test": _cosqa_json(CODEXGLUE_STAQC, "Text-Code/NL-code-search-WebQuery/data/test_staqc.json"),
    "codetrans-valid": _codetrans("valid"),
    "codetrans-test": _codetrans("test"),
    "conala-test": _conala_test,
    "text2sql-data-devtest": _text2sql_heldout,
    "wikisql-devtest": _wikisql_heldout,
}


def write_evalset(folder: Path, rows: Rows) -> int:
    """A BEIR-like folder (queries.jsonl + corpus.jsonl, ``{_id, text}``) of unique texts."""
    folder.mkdir(parents=True, exist_ok=True)
    queries: dict[str, str] = {}
    docs: dict[str, str] = {}
    for query, document in rows:
        queries.setdefault(text_hash(query), query)
        docs.setdefault(text_hash(document), document)
    for name, texts in (("queries", queries), ("corpus", docs)):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for i, text in enumerate(texts.values()):
                fh.write(json.dumps({"_id": str(i), "text": text}, ensure_ascii=False) + "\n")
    return len(queries) + len(docs)


# ---- conversion -------------------------------------------------------------------------------


def convert(dataset: Dataset, mirror: Path, decontam: Decontaminator, out: Path, seed: int) -> dict:
    """Write ``out/<name>.jsonl``; return its counts."""
    seen: set[str] = set()
    kept: list[Pair] = []
    stats = {"task": dataset.task, "read": 0, "empty": 0, "duplicate": 0, "contaminated": 0}
    hits: Counter[str] = Counter()
    for query, document in dataset.rows(mirror):
        stats["read"] += 1
        query, document = query.strip(), document.strip("\n")
        if not query or not document.strip():
            stats["empty"] += 1
            continue
        key = text_hash(query + "\x00" + document)
        if key in seen:
            stats["duplicate"] += 1
            continue
        seen.add(key)
        hit = decontam.contaminated(query, document)
        if hit is not None:
            stats["contaminated"] += 1
            hits[hit.split("/")[0]] += 1
            continue
        kept.append(Pair(dataset.task, query, document, dataset.language, dataset.name))
    stats["before_decontam"] = stats["read"] - stats["empty"] - stats["duplicate"]
    stats["after_decontam"] = len(kept)
    stats["contaminated_by"] = dict(hits.most_common())
    if len(kept) > CAP:
        kept = random.Random(seed).sample(kept, CAP)
    stats["written"] = len(kept)
    target = out / f"{dataset.name}.jsonl"
    if not kept:  # an empty pair file is an error for `codesift train`
        target.unlink(missing_ok=True)
        return stats
    with target.open("w", encoding="utf-8") as fh:
        for pair in kept:
            fh.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"), help="folder of fetched snapshots")
    parser.add_argument("--retrieval", type=Path, default=Path("/work/shared/data/retrieval"),
                        help="folder of BEIR evaluation sets; every subfolder is decontaminated against")
    parser.add_argument("--evalsets", type=Path, default=Path("work/evalsets"),
                        help="where to write the BEIR-like folders of the public dev/test splits")
    parser.add_argument("--out", type=Path, default=Path("work/public"))
    parser.add_argument("--only", nargs="*", choices=sorted(DATASETS), help="datasets to convert (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        folders = sorted(p for p in args.retrieval.iterdir() if (p / "queries.jsonl").is_file())
        if not folders:
            raise FileNotFoundError(f"{args.retrieval} holds no BEIR folders")
        evalset_sizes = {}
        for name, rows in EVALSETS.items():
            evalset_sizes[name] = write_evalset(args.evalsets / name, rows(args.mirror))
            folders.append(args.evalsets / name)
        print(f"indexing {len(folders)} evaluation folders", file=sys.stderr)
        decontam = Decontaminator.from_beir(folders)
        args.out.mkdir(parents=True, exist_ok=True)
        stats_file = args.out / "stats.json"
        report = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        report.setdefault("datasets", {})
        report["eval_folders"] = [str(f) for f in folders]
        report["eval_texts"] = len(decontam)
        report["evalset_texts"] = evalset_sizes
        for name in args.only or DATASETS:
            stats = convert(DATASETS[name], args.mirror, decontam, args.out, args.seed)
            report["datasets"][name] = stats
            print(f"{name}: {json.dumps(stats)}", file=sys.stderr)
            stats_file.write_text(json.dumps(report, indent=2) + "\n")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
