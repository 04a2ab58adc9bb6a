"""Held-out retrieval sets for model selection (issue 19, item 4): BEIR folders that no training mix touches.

A one-off data-preparation program. Each set is written as ``<out>/<name>/`` with ``corpus.jsonl``,
``queries.jsonl``, ``qrels.tsv``, ``task.json`` (the layout of ``/work/shared/data/retrieval/*``, which
``codesift eval --data DIR`` reads). Sources are read from bare git snapshots at pinned commits
(``/work/.mirror/<owner>+<name>/repo``, as the ``fetch`` tool lays them out):

- ``cosqa-test``: CoSQA's retrieval test split (500 Bing web queries -> CodeSearchNet Python functions, the
  authors' 6,267-function corpus). A test split, never trained on (CoSQA train is out of every mix, and
  ``scripts/public_data.py`` decontaminates against it). CodeXGLUE WebQueryTest would be a fully separate
  dataset, but its labels are not in the snapshot (``webquery_answers.txt`` is a 5-line sample).
- ``ruby-doc``: docstring summary -> the method without its docstring, from three Ruby repositories
  that no training set reads (httprb/http, rails/thor, sidekiq/sidekiq); the undocumented methods of
  the same trees are distractors in the corpus.
- ``commits-heldout``: commit message -> the functions the commit changed, as they stood at the parent,
  from three repositories reserved from training (psf/black, sirupsen/logrus, gin-gonic/gin; not in the
  localization benchmark either); the corpus also holds every function of each repository at one pinned
  commit (those sharing a path and name with a changed function are left out, so no old version of a gold
  function is a false negative).

    PYTHONPATH=src python scripts/build_heldout.py --out /work/data/heldout
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from codesift.data.mining import summarize_doc, text_hash

COCLR = ("Jun-jie-Huang/CoCLR", "14ebcacf9e9bc3e7109102632bc63047876f27d2")
RUBY_REPOS = {"httprb/http": None, "rails/thor": None, "sidekiq/sidekiq": None}  # None: the snapshot's HEAD
COMMIT_REPOS = {"psf/black": None, "sirupsen/logrus": None, "gin-gonic/gin": None}
MIN_LINES, MAX_CHARS = 3, 4000


def git(mirror: Path, repo: str, *args: str) -> str:
    gd = mirror / repo.replace("/", "+") / "repo"
    if not gd.is_dir():
        raise FileNotFoundError(f"{gd} is missing: fetch github:{repo} first")
    return subprocess.run(["git", "-C", str(gd), *args], capture_output=True, check=True).stdout.decode(
        "utf-8", errors="replace")


def pin(mirror: Path, repo: str, commit: str | None) -> str:
    return commit or git(mirror, repo, "rev-parse", "HEAD").strip()


def write_beir(folder: Path, queries: dict[str, str], corpus: dict[str, str], qrels: list[tuple[str, str]],
               task: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("queries", queries), ("corpus", corpus)):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for _id, text in rows.items():
                fh.write(json.dumps({"_id": _id, "text": text}, ensure_ascii=False) + "\n")
    with (folder / "qrels.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q, d in qrels:
            fh.write(f"{q}\t{d}\t1\n")
    task = {**task, "queries": len(queries), "corpus": len(corpus), "qrels": len(qrels)}
    (folder / "task.json").write_text(json.dumps(task, indent=2) + "\n", encoding="utf-8")
    print(f"{folder.name}: {len(queries)} queries, {len(corpus)} documents, {len(qrels)} qrels", file=sys.stderr)


# ------------------------------------------------------------------------------------- cosqa-test


def build_cosqa_test(mirror: Path, out: Path) -> None:
    """CoSQA retrieval test: 500 web queries against the authors' 6,267-function corpus (as cosqa-dev)."""
    repo, commit = COCLR
    corpus_map = json.loads(git(mirror, repo, "show", f"{commit}:data/search/code_idx_map.txt"))
    corpus = {str(idx): code for code, idx in sorted(corpus_map.items(), key=lambda kv: kv[1])}
    queries, qrels = {}, []
    for row in json.loads(git(mirror, repo, "show", f"{commit}:data/search/cosqa-retrieval-test-500.json")):
        queries[row["idx"]] = row["doc"].strip()
        qrels.append((row["idx"], str(row["retrieval_idx"])))
    write_beir(out / "cosqa-test", queries, corpus, qrels, {
        "task": "nl2code",
        "description": "CoSQA retrieval test: 500 web queries -> Python functions, the authors' 6,267-function corpus "
                       "(the corpus of cosqa-dev, with the other 500 queries: a held-out query set of a dev dataset)",
        "source": f"{repo}@{commit} data/search/cosqa-retrieval-test-500.json + code_idx_map.txt (MIT repository; "
                  "CoSQA data C-UDA; functions from CodeSearchNet)",
    })


# ------------------------------------------------------------------------------------- units


def repo_units(mirror: Path, repo: str, commit: str, suffixes: tuple[str, ...]) -> Iterator[tuple[str, object, str]]:
    """(path, unit, file text) for the functions and methods of the non-test source files at ``commit``."""
    from codesift.data.commits import is_code_path
    from codesift.data.languages import detect_language
    from codesift.data.units import extract_units

    for path in git(mirror, repo, "ls-tree", "-r", "--name-only", commit).split("\n"):
        if not path.endswith(suffixes) or not is_code_path(path) or re.search(r"(^|/)(examples?|docs?|vendor)/", path):
            continue
        text = git(mirror, repo, "show", f"{commit}:{path}")
        for unit in extract_units(text, detect_language(path)):
            if unit.kind != "class" and not unit.has_error:
                yield path, unit, text


def unit_code(unit, text: str, keep_doc: bool) -> str | None:
    from codesift.data.mining import _dedent_unit
    from codesift.data.units import strip_doc

    code = _dedent_unit(unit.text if keep_doc else strip_doc(unit), text, unit.start_byte,
                        text.encode("utf-8", errors="surrogatepass")).strip("\n")
    if code.count("\n") + 1 < MIN_LINES or len(code) > MAX_CHARS:
        return None
    return code


# ------------------------------------------------------------------------------------- ruby-doc


def build_ruby(mirror: Path, out: Path, n_queries: int, seed: int) -> None:
    from codesift.data.mining import is_boilerplate_doc

    documented: list[tuple[str, str, str]] = []  # (repo, summary, code)
    distractors: list[str] = []
    pins = {}
    for repo, commit in RUBY_REPOS.items():
        pins[repo] = commit = pin(mirror, repo, commit)
        for _path, unit, text in repo_units(mirror, repo, commit, (".rb",)):
            code = unit_code(unit, text, keep_doc=False)
            if code is None:
                continue
            summary = summarize_doc(unit.docstring) if unit.docstring else ""
            if len(summary.split()) >= 3 and not is_boilerplate_doc(summary):
                documented.append((repo, summary, code))
            else:
                distractors.append(code)
    seen: set[str] = set()
    unique = []
    for repo, summary, code in documented:  # one query per text, one document per text
        if text_hash(summary) not in seen and text_hash(code) not in seen:
            seen.update((text_hash(summary), text_hash(code)))
            unique.append((repo, summary, code))
    chosen = random.Random(seed).sample(unique, min(n_queries, len(unique)))
    queries, corpus, qrels = {}, {}, []
    for i, (_repo, summary, code) in enumerate(chosen):
        queries[f"q{i}"], corpus[f"g{i}"] = summary, code
        qrels.append((f"q{i}", f"g{i}"))
    picked = set(chosen)
    in_corpus = {text_hash(c) for c in corpus.values()}
    for code in [c for row in unique if row not in picked for c in (row[2],)] + distractors:
        if text_hash(code) not in in_corpus:
            in_corpus.add(text_hash(code))
            corpus[f"d{len(corpus)}"] = code
    write_beir(out / "ruby-doc", queries, corpus, qrels, {
        "task": "nl2code",
        "description": f"Ruby docstring summaries -> the method without its docstring ({len(chosen)} sampled); the "
                       "other methods of the three trees (documented or not) are distractors",
        "source": ", ".join(f"{r}@{c}" for r, c in pins.items()) + " (MIT, MIT, LGPL-3.0)",
    })


# ------------------------------------------------------------------------------------- commits


def changed_parent_lines(mirror: Path, repo: str, parent: str, commit: str, path: str) -> set[int]:
    """Lines of ``path`` at ``parent`` that ``commit`` deleted or changed (an insertion counts the line it follows)."""
    lines: set[int] = set()
    for match in re.finditer(r"^@@ -(\d+)(?:,(\d+))? \+", git(mirror, repo, "diff", "-U0", parent, commit, "--", path),
                             flags=re.M):
        start, count = int(match.group(1)), int(match.group(2) or 1)
        lines.update(range(start, start + count) if count else (start, start + 1))
    return lines


def build_commits(mirror: Path, out: Path, per_repo: int, window: int) -> None:
    from codesift.data.commits import clean_message, is_code_path, iter_commits, message_skip_reason
    from codesift.data.languages import detect_language
    from codesift.data.units import extract_units

    queries, corpus, qrels = {}, {}, []
    doc_ids: dict[str, str] = {}
    gold_names: set[tuple[str, str, str]] = set()
    pins = {}
    for repo, commit in COMMIT_REPOS.items():
        pins[repo] = head = pin(mirror, repo, commit)
        taken = 0
        gd = mirror / repo.replace("/", "+") / "repo"
        for c in iter_commits(gd, head, window):
            if taken == per_repo:
                break
            query = clean_message(c.message)
            subject = query.split("\n", 1)[0]
            if c.parent is None or message_skip_reason(c, query) or len(subject.split()) < 4:
                continue
            code = [f for f in c.files if is_code_path(f.path) and f.existed_before]
            if not code or len(code) > 3:
                continue
            gold = []
            for f in code:
                changed = changed_parent_lines(mirror, repo, c.parent, c.sha, f.path)
                text = git(mirror, repo, "show", f"{c.parent}:{f.path}")
                for unit in extract_units(text, detect_language(f.path)):
                    if unit.kind == "class" or unit.has_error or not changed & set(range(unit.start_line, unit.end_line + 1)):
                        continue
                    body = unit_code(unit, text, keep_doc=True)
                    if body is not None:
                        gold.append((f.path, unit.qualified_name, body))
            if not gold or len(gold) > 8:  # nothing a function holds, or a sweeping change
                continue
            q = f"q{len(queries)}"
            queries[q] = query
            for path, name, body in gold:
                d = doc_ids.setdefault(text_hash(body), f"g{len(doc_ids)}")
                corpus[d] = body
                qrels.append((q, d))
                gold_names.add((repo, path, name))
            taken += 1
        print(f"{repo}: {taken} queries", file=sys.stderr)
    for repo, head in pins.items():  # distractors: the functions of each tree at its pinned commit
        suffixes = (".py",) if repo == "psf/black" else (".go",)
        for path, unit, text in repo_units(mirror, repo, head, suffixes):
            body = unit_code(unit, text, keep_doc=True)
            if body is None or (repo, path, unit.qualified_name) in gold_names or text_hash(body) in doc_ids:
                continue
            doc_ids[text_hash(body)] = d = f"d{len(doc_ids)}"
            corpus[d] = body
    write_beir(out / "commits-heldout", queries, corpus, qrels, {
        "task": "nl2code",
        "description": "Commit message -> the functions the commit changed, at its parent; corpus = those plus every "
                       "function of each repository at its pinned commit (gold path+name excluded)",
        "source": ", ".join(f"{r}@{c}" for r, c in pins.items()) + " (MIT, MIT, MIT)",
    })


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--out", type=Path, default=Path("/work/data/heldout"))
    ap.add_argument("--only", nargs="*", choices=("cosqa-test", "ruby-doc", "commits-heldout"))
    ap.add_argument("--ruby-queries", type=int, default=400)
    ap.add_argument("--commits-per-repo", type=int, default=120)
    ap.add_argument("--window", type=int, default=3000, help="newest commits read per repository")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    only = set(args.only or ("cosqa-test", "ruby-doc", "commits-heldout"))
    if "cosqa-test" in only:
        build_cosqa_test(args.mirror, args.out)
    if "ruby-doc" in only:
        build_ruby(args.mirror, args.out, args.ruby_queries, args.seed)
    if "commits-heldout" in only:
        build_commits(args.mirror, args.out, args.commits_per_repo, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
