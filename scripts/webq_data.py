"""Web-style question -> Python code training pairs (issue 19, item 1): ``webq-train.jsonl``, decontaminated.

A one-off data-preparation program, like ``scripts/public_data.py``. The public train splits of web
questions -> code that the project already uses are small (CoNaLa curated train, StaQC as CodeXGLUE
shipped it), and the large ones are not in any snapshot that can be fetched here (CoNaLa mined, the full
StaQC pickles: the blobs are absent; CoSQA train is out on purpose: its code pool is an evaluation
corpus). So this file is built from two kinds of source, each row tagged in ``source``:

- ``webq-human:<repo>``: questions written by people, with their answer code, from three exercise
  collections (numpy-100, 100-pandas-puzzles, 30-seconds-of-python);
- ``webq-rewrite:<repo>``: the docstring summary of a documented Python function, rewritten by fixed rules
  into the shape of a search-engine query (lower case, an imperative verb, no articles, a clause at most,
  often "python" before or after: "Return True if the path is a directory." -> "python check if path is
  directory"), and the function as the document, with its docstring half of the time (a web query meets
  code that is documented or not).

Files are read from bare git snapshots (``/work/.mirror/<owner>+<name>/repo``, as ``fetch`` lays them
out) at pinned commits. No repository of the localization benchmark, of the held-out sets or of
SWE-bench is read (the list is checked at start). Pairs are deduplicated (query+document, and one query
per document) and decontaminated with ``codesift.data.decontam`` against every BEIR folder given.

    PYTHONPATH=src python scripts/webq_data.py --out /work/data/webq-train.jsonl \\
        --exclude '/work/shared/data/retrieval/*' --exclude '/work/main/work/evalsets/*' \\
        --exclude '/work/data/heldout/*'
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from codesift.data.decontam import Decontaminator
from codesift.data.mining import summarize_doc, text_hash
from codesift.data.pair import Pair

# (repo, commit): questions written by people
NUMPY_100 = ("rougier/numpy-100", "6447594ad639908dc979446a4ec7f0f2e62fb23b")  # MIT
PANDAS_100 = ("ajcr/100-pandas-puzzles", "457b15f1efc127c6df5171bae34332838a9ffcb0")  # MIT
SECONDS_30 = ("Chalarangelo/30-seconds-of-python", "42680a0cd6f7af5282c1a6f943ffd9fc67238e7e")  # CC BY 4.0

# Python repositories whose documented functions are rewritten (none reserved for evaluation; licences in DATA.md)
REWRITE_REPOS = (
    "Delgan/loguru", "PyCQA/flake8", "PyCQA/isort", "Textualize/rich", "Textualize/textual", "agronholm/anyio",
    "aio-libs/aiohttp", "celery/celery", "dask/dask", "encode/django-rest-framework", "encode/starlette",
    "encode/uvicorn", "getsentry/sentry-python", "hynek/structlog", "ipython/ipython", "jazzband/pip-tools",
    "marshmallow-code/marshmallow", "mitmproxy/mitmproxy", "networkx/networkx", "pallets/jinja", "pallets/quart",
    "pydantic/pydantic", "pypa/pip", "pypa/virtualenv", "python-attrs/attrs", "python-trio/trio", "scrapy/scrapy",
    "urllib3/urllib3", "mahmoud/boltons", "TheAlgorithms/Python", "sqlalchemy/sqlalchemy", "tornadoweb/tornado",
    "more-itertools/more-itertools", "keon/algorithms", "numpy/numpy", "nltk/nltk", "twisted/twisted", "spotify/luigi",
    "scikit-image/scikit-image", "boto/botocore", "python-pillow/Pillow", "statsmodels/statsmodels",
)
# never read: the localization benchmark, the held-out evaluation sets (EVAL.md), SWE-bench's twelve
FORBIDDEN = {
    "tox-dev/tox", "httpie/cli", "pallets/werkzeug", "pallets/click", "encode/httpx", "psf/black", "fastapi/fastapi",
    "expressjs/express", "axios/axios", "sindresorhus/got", "sirupsen/logrus", "spf13/cobra", "gin-gonic/gin",
    "burntsushi/ripgrep", "clap-rs/clap", "httprb/http", "rails/thor", "sidekiq/sidekiq",
    "astropy/astropy", "django/django", "matplotlib/matplotlib", "mwaskom/seaborn", "pallets/flask", "psf/requests",
    "pydata/xarray", "pylint-dev/pylint", "pytest-dev/pytest", "scikit-learn/scikit-learn", "sphinx-doc/sphinx",
    "sympy/sympy",
}
PER_REPO = 2500  # rewritten pairs per repository at most (a seeded sample above it)
MAX_CODE_CHARS = 4000
MIN_CODE_LINES = 3

# ------------------------------------------------------------------------------------------ git


def git_dir(mirror: Path, repo: str) -> Path:
    path = mirror / repo.replace("/", "+") / "repo"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing: fetch github:{repo} first")
    return path


def head_commit(mirror: Path, repo: str) -> str:
    out = subprocess.run(["git", "-C", str(git_dir(mirror, repo)), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def read_blob(mirror: Path, repo: str, commit: str, path: str) -> str:
    out = subprocess.run(["git", "-C", str(git_dir(mirror, repo)), "show", f"{commit}:{path}"], capture_output=True,
                         check=True)
    return out.stdout.decode("utf-8", errors="replace")


def python_files(mirror: Path, repo: str, commit: str) -> Iterator[tuple[str, str]]:
    """(path, text) of every non-test Python source file at ``commit`` (one ``git cat-file --batch``)."""
    from codesift.data.commits import is_code_path

    gd = str(git_dir(mirror, repo))
    listing = subprocess.run(["git", "-C", gd, "ls-tree", "-r", "-l", commit], capture_output=True, text=True,
                             check=True).stdout
    wanted: list[tuple[str, str]] = []
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        _mode, kind, sha, size = meta.split()
        if kind == "blob" and path.endswith(".py") and size != "-" and int(size) < 400_000 and is_code_path(path) \
                and not re.search(r"(^|/)(docs?|examples?|benchmarks?|_vendor|vendor)/", path):
            wanted.append((path, sha))
    if not wanted:
        return
    proc = subprocess.Popen(["git", "-C", gd, "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin and proc.stdout
    for path, sha in wanted:
        proc.stdin.write(f"{sha}\n".encode())
        proc.stdin.flush()
        header = proc.stdout.readline().split()
        if len(header) < 3 or header[1] == b"missing":
            continue
        data = proc.stdout.read(int(header[2]))
        proc.stdout.read(1)  # the newline after the object
        yield path, data.decode("utf-8", errors="replace")
    proc.stdin.close()
    proc.wait()


# -------------------------------------------------------------------------------- human questions


def numpy_100(mirror: Path) -> Iterator[tuple[str, str]]:
    """numpy-100 ``source/exercises100.ktx``: ``< qN`` question, ``< aN`` answer code."""
    repo, commit = NUMPY_100
    blocks = re.split(r"^< ([qha])(\d+)\s*$", read_blob(mirror, repo, commit, "source/exercises100.ktx"), flags=re.M)
    items: dict[str, dict[str, str]] = {}
    for kind, num, body in zip(blocks[1::3], blocks[2::3], blocks[3::3]):
        items.setdefault(num, {})[kind] = body.strip()
    for item in items.values():
        if item.get("q") and item.get("a"):
            question = re.sub(r"\s*\([★☆]+\)\s*$", "", item["q"]).replace("`", "")
            yield " ".join(question.split()), item["a"]


def pandas_100(mirror: Path) -> Iterator[tuple[str, str]]:
    """100-pandas-puzzles (with solutions): a ``**N.** question`` markdown cell, then its code cell."""
    repo, commit = PANDAS_100
    cells = json.loads(read_blob(mirror, repo, commit, "100-pandas-puzzles-with-solutions.ipynb"))["cells"]
    for cell, after in zip(cells, cells[1:]):
        text = "".join(cell["source"])
        match = re.match(r"\*\*\d+\.\*\*\s+(.+)", text, flags=re.S)
        if cell["cell_type"] == "markdown" and match and after["cell_type"] == "code":
            question = re.sub(r"\(\*hint:.*?\*\)", "", match.group(1), flags=re.S).replace("`", "")
            question = question.split("\n", 1)[0]  # the question, not the data set up after it
            code = "".join(after["source"]).strip()
            if code:
                yield " ".join(question.split()), code


def seconds_30(mirror: Path) -> Iterator[tuple[str, str]]:
    """30-seconds-of-python ``snippets/*.md``: the title, and the first ``py`` block (the function)."""
    repo, commit = SECONDS_30
    gd = str(git_dir(mirror, repo))
    names = subprocess.run(["git", "-C", gd, "ls-tree", "--name-only", commit, "snippets/"], capture_output=True,
                           text=True, check=True).stdout.split()
    for name in names:
        text = read_blob(mirror, repo, commit, name)
        title = re.search(r"^title:\s*(.+)$", text, flags=re.M)
        code = re.search(r"```py\n(.*?)```", text, flags=re.S)
        if title and code:
            yield title.group(1).strip().strip("'\""), code.group(1).strip()


HUMAN = {"numpy-100": (NUMPY_100, numpy_100), "100-pandas-puzzles": (PANDAS_100, pandas_100),
         "30-seconds-of-python": (SECONDS_30, seconds_30)}

# ------------------------------------------------------------------------------------ rewrites

VERBS = set("""
get return check create make build convert compute calculate count find search parse read write load save dump
open close remove delete add append insert update set sort split join merge format print send receive download
upload copy move rename list generate encode decode encrypt decrypt hash compress decompress extract filter
validate normalize escape unescape quote unquote replace strip truncate wrap flatten group iterate run execute
call start stop kill wait connect register resolve render draw plot fetch request apply map transform serialize
deserialize compare match clean clear reset initialize configure install import export scale resize rotate crop
round pad shuffle sample select query log raise handle retry cache look determine test ensure detect infer guess
measure estimate evaluate expand collapse concatenate combine zip unzip pack unpack tokenize translate lower upper
capitalize reverse invert swap toggle enable disable show hide display emit notify schedule spawn flush seek walk
scan traverse visit collect gather aggregate summarize sum average construct produce retrieve obtain fill
strip trim split verify assert yield wrap unwrap attach detach bind mount store restore lock unlock acquire
release sign mark unmark choose pick prepare process handle dispatch convert cast coerce shift pop push peek
close tell emit decorate patch mock iterate enumerate index slice chunk batch repeat accumulate multiply divide
subtract interpolate resample stack unstack pivot reshape transpose broadcast fit predict train classify cluster
""".split())
SKIP_START = {"this", "these", "helper", "internal", "used", "called", "deprecated", "see", "alias", "note",
              "todo", "same", "wrapper", "override", "overrides", "implementation", "implements", "shortcut",
              "hook", "callback", "private", "decorator", "like", "subclass", "subclasses", "backwards", "compat"}
DROP_WORDS = {"the", "a", "an", "given", "specified", "provided", "supplied", "corresponding", "respective"}


def base_verb(word: str) -> str | None:
    """The base form of a leading verb ("Returns" -> "return"), or None if the word is not a known action."""
    w = word.lower()
    for cand in (w, w[:-3] + "y" if w.endswith("ies") else "", w[:-2] if w.endswith("es") else "",
                 w[:-1] if w.endswith("s") else ""):
        if cand in VERBS:
            return cand
    return None


def _rng(key: str) -> random.Random:
    return random.Random(int(hashlib.sha1(key.encode()).hexdigest()[:12], 16))


def web_query(summary: str, key: str) -> str | None:
    """A search-engine style query made from a docstring summary, or None when it would not make one."""
    text = summary.split("\n", 1)[0]
    text = re.sub(r":\w+:`~?([^`]*)`", lambda m: m.group(1).split(".")[-1], text)  # :func:`os.path.join` -> join
    text = re.sub(r"\([^)]*\)", " ", text)  # parentheticals
    text = re.sub(r"[`*\"'<>\[\]{}|\\]", " ", text)
    text = re.split(r"(?<=[a-z0-9])[.!?](\s|$)|;|:\s| -- | - ", text, maxsplit=1)[0]  # the first sentence/clause
    words = text.split()
    if len(words) < 2 or words[0].lower() in SKIP_START:
        return None
    verb = base_verb(words[0])
    if verb is None:
        return None
    rng = _rng(key)
    rest = [w.lower().strip(",.") for w in words[1:]]
    rest = [w for w in rest if w]
    if not rest or any(w in {"self", "cls", "this", "kwargs", "args"} for w in rest[:3]):
        return None
    # "return true if X" / "return whether X" / "check whether X" -> "check if X"
    if verb in {"return", "get"} and rest[0] in {"true", "whether"}:
        verb, rest = "check", ["if"] + rest[2 if rest[0] == "true" and len(rest) > 1 and rest[1] in {"if", "when", "iff"}
                                           else 1:]
    elif verb in {"check", "determine", "test"} and rest[0] in {"whether", "if", "that"}:
        verb, rest = "check", ["if"] + rest[1:]
    elif verb == "return":
        verb = rng.choice(["get", "get", "return", "get"])
    elif verb == "look" and rest[0] == "up":
        verb, rest = "lookup", rest[1:]
    if rng.random() < 0.8:
        rest = [w for w in rest if w not in DROP_WORDS]
    # a clause at most: stop at a comma or a conjunction that starts a second clause, 10 words at most
    out: list[str] = []
    for w in rest:
        if w in {"which", "so", "unless", "otherwise", "because", "while"} or (out and out[-1].endswith(",")):
            break
        out.append(w.rstrip(","))
        if len(out) == 10:
            break
    while out and out[-1] in {"and", "or", "of", "to", "for", "in", "with", "from", "by", "if", "on", "as", "at"}:
        out.pop()
    core = " ".join([verb] + out) if rng.random() < 0.85 or verb in {"check", "convert"} else " ".join(out)
    if len(core.split()) < 3 or not re.search(r"[a-z]", core):
        return None
    style = rng.random()
    if style < 0.4:
        return f"python {core}"
    if style < 0.6:
        return f"{core} python"
    if style < 0.7:
        return f"how to {core} in python" if core.split()[0] == verb else f"{core} in python"
    if style < 0.75:
        return f"{core} in python"
    return core


def rewrite_pairs(mirror: Path, repo: str, commit: str) -> Iterator[tuple[str, str, str, str]]:
    """(query, document, path, symbol) for the documented public functions and methods of one repository."""
    from codesift.data.mining import _dedent_unit, is_boilerplate_doc
    from codesift.data.units import extract_units, strip_doc

    for path, text in python_files(mirror, repo, commit):
        try:
            units = extract_units(text, "python")
        except Exception:  # noqa: BLE001 - a file the parser chokes on is skipped, not fatal
            continue
        data = text.encode("utf-8", errors="surrogatepass")
        for unit in units:
            if unit.kind == "class" or unit.has_error or not unit.docstring or unit.name.startswith("_"):
                continue
            summary = summarize_doc(unit.docstring)
            if len(summary) < 12 or is_boilerplate_doc(summary):
                continue
            key = f"{repo}:{path}:{unit.qualified_name}"
            query = web_query(summary, key)
            if query is None:
                continue
            keep_doc = _rng(key + "#doc").random() < 0.5
            code = _dedent_unit(unit.text if keep_doc else strip_doc(unit), text, unit.start_byte, data)
            if code.count("\n") + 1 < MIN_CODE_LINES or len(code) > MAX_CODE_CHARS:
                continue
            yield query, code, path, unit.qualified_name


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--exclude", action="append", default=[], help="BEIR folder glob to decontaminate against")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-repo", type=int, default=PER_REPO)
    parser.add_argument("--repos", nargs="*", default=list(REWRITE_REPOS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bad = sorted(r for r in args.repos if r.lower() in FORBIDDEN)
    if bad:
        print(f"error: reserved for evaluation, never read for training: {', '.join(bad)}", file=sys.stderr)
        return 2
    folders = sorted({Path(p) for pattern in args.exclude for p in glob.glob(pattern) if (Path(p) / "queries.jsonl").is_file()})
    print(f"decontaminating against {len(folders)} folders", file=sys.stderr)
    decontam = Decontaminator.from_beir(folders)
    stats: dict = {"eval_folders": [str(f) for f in folders], "sources": {}}
    seen_pairs: set[str] = set()
    seen_docs: set[str] = set()
    kept: list[Pair] = []

    def add(rows, source: str, cap: int | None) -> None:
        st = Counter()
        candidates: list[Pair] = []
        for query, document, *where in rows:
            st["read"] += 1
            query, document = " ".join(query.split()), document.strip("\n")
            if not query or not document.strip():
                st["empty"] += 1
                continue
            pk, dk = text_hash(query + "\x00" + document), text_hash(document)
            if pk in seen_pairs or dk in seen_docs:
                st["duplicate"] += 1
                continue
            seen_pairs.add(pk)
            seen_docs.add(dk)
            if decontam.contaminated(query, document) is not None:
                st["contaminated"] += 1
                continue
            path, symbol = (where + ["", ""])[:2]
            candidates.append(Pair("nl2code", query, document, "python", source, path, symbol))
        if cap is not None and len(candidates) > cap:
            candidates = random.Random(args.seed).sample(candidates, cap)
        st["written"] = len(candidates)
        kept.extend(candidates)
        stats["sources"][source] = dict(st)
        print(f"{source}: {dict(st)}", file=sys.stderr, flush=True)

    for name, ((repo, commit), reader) in HUMAN.items():
        add(reader(args.mirror), f"webq-human:{repo}", None)
        stats["sources"][f"webq-human:{repo}"]["commit"] = commit
    for repo in args.repos:
        try:
            commit = head_commit(args.mirror, repo)
        except (FileNotFoundError, subprocess.CalledProcessError) as exc:
            print(f"skip {repo}: {exc}", file=sys.stderr)
            continue
        add(rewrite_pairs(args.mirror, repo, commit), f"webq-rewrite:{repo}", args.per_repo)
        stats["sources"][f"webq-rewrite:{repo}"]["commit"] = commit
    random.Random(args.seed).shuffle(kept)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for pair in kept:
            fh.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
    stats["written"] = len(kept)
    Path(str(args.out) + ".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"{len(kept)} pairs -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
