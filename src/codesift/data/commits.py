"""Reading a repository's git history: commits, their messages, changed files and diffs.

One reader serves three users: ``codesift data mine --commits`` turns commits into nl2code pairs
(cleaned message -> unified diff of the source files it changed, the CommitPackFT analogue),
``--changed-chunks`` into localization pairs (message -> the chunks it changed, ``data.commit_chunks``),
and ``benchmarks/localization.py`` turns them into localization cases (message -> files changed).
Git runs as a subprocess (``git log --raw``, ``git diff``); nothing is checked out. Training data never
comes from SWE-bench's twelve repositories nor from the localization benchmark's (``reserved_repositories``).
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from codesift.data.files import GENERATED_NAMES, is_test_path
from codesift.data.languages import SUPPORTED_LANGUAGES, detect_language
from codesift.data.mining import MineReport
from codesift.data.pair import Pair

logger = logging.getLogger(__name__)

# The twelve repositories of SWE-bench: their history must never become training data or a benchmark
# of ours (SWE-bench's tasks are their commits).
SWE_BENCH_REPOS: dict[str, str] = {
    "django": "django/django",
    "sympy": "sympy/sympy",
    "scikit-learn": "scikit-learn/scikit-learn",
    "matplotlib": "matplotlib/matplotlib",
    "pytest": "pytest-dev/pytest",
    "sphinx": "sphinx-doc/sphinx",
    "astropy": "astropy/astropy",
    "requests": "psf/requests",
    "pylint": "pylint-dev/pylint",
    "xarray": "pydata/xarray",
    "seaborn": "mwaskom/seaborn",
    "flask": "pallets/flask",
}

_RECORD, _FIELD = "\x1e", "\x00"
_LOG_FORMAT = "%x1e%H%x00%P%x00%an%x00%ae%x00%at%x00%B%x00"


class GitError(RuntimeError):
    """A git command failed (not a repository, unknown revision, git missing)."""


@dataclass(frozen=True)
class FileChange:
    """One file of a commit, from ``--raw``: ``status`` is A (added), M (modified), D (deleted) or T (type change)."""

    path: str
    status: str

    @property
    def existed_before(self) -> bool:
        """True when the file was in the parent commit (so a search at the parent can find it)."""
        return self.status != "A"


@dataclass
class Commit:
    """A non-merge commit: its message, first parent and changed files."""

    sha: str
    parent: str | None
    author: str
    email: str
    timestamp: int
    message: str
    files: list[FileChange] = field(default_factory=list)
    merge: bool = False  # a merge commit (``files`` then compare it with its first parent)

    @property
    def subject(self) -> str:
        """The first line of the message."""
        return self.message.strip().split("\n", 1)[0].strip()


def git(repo: str | Path, *args: str) -> str:
    """Run ``git -C repo args...`` and return its stdout; a failure raises GitError with git's message."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise GitError("git is not installed; install git to read commit history") from exc
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])} failed in {repo}: {msg[-1] if msg else proc.returncode}")
    return proc.stdout.decode("utf-8", errors="replace")


def open_repository(path: str | Path) -> Path:
    """The git directory or work tree at ``path``, checked to be a repository that is not one of SWE-bench's."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a git repository (a clone or a bare mirror)")
    try:
        git(path, "rev-parse", "--git-dir")
    except GitError as exc:
        raise ValueError(f"{path} is not a git repository ({exc})") from exc
    refuse_swe_bench(path)
    return path


def _repo_names(path: Path) -> list[str]:
    """Names the repository goes by: its folder (and a mirror's ``owner+name`` folder) and its remotes."""
    names = []
    resolved = path.resolve()
    for part in (resolved.name, resolved.parent.name):
        names.append(part.removesuffix(".git"))
        names.extend(part.split("+")[1:])  # /work/.mirror/owner+name/repo
    try:
        remotes = git(path, "config", "--get-regexp", r"^remote\..*\.url$")
    except GitError:  # no remotes configured
        remotes = ""
    for line in remotes.splitlines():
        url = line.split(maxsplit=1)[-1].rstrip("/")
        names.append(re.split(r"[/:]", url)[-1].removesuffix(".git"))
    return [n.lower() for n in names if n]


def refuse_swe_bench(path: str | Path) -> None:
    """Raise ValueError when the repository is (by folder name or remote) one of SWE-bench's twelve."""
    for name in _repo_names(Path(path)):
        if name in SWE_BENCH_REPOS:
            raise ValueError(
                f"{path} looks like {SWE_BENCH_REPOS[name]}, one of the twelve SWE-bench repositories; "
                "its history must not be mined (it is the evaluation set of SWE-bench)"
            )


# The localization benchmark's cases (benchmarks/data/localization.jsonl of a source checkout): its repositories
# are held out from training, read at run time so that a repository added to the benchmark is refused at once.
LOCALIZATION_CASES = Path(__file__).resolve().parents[3] / "benchmarks" / "data" / "localization.jsonl"
_OWNER_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def reserved_repositories(lists: Iterable[str | Path] = (), cases: str | Path | None = LOCALIZATION_CASES) -> set[str]:
    """``owner/name`` (lower case) of the repositories no training data may come from: the ``repo`` of every
    localization case in ``cases`` and every ``owner/name`` in ``lists`` (text files, ``#`` comments; JSONL
    files are read for their ``repo`` field). A file that does not exist adds nothing."""
    import json

    names: set[str] = set()
    for file in [cases, *lists]:
        if file is None or not Path(file).is_file():
            continue
        for line in Path(file).read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("{"):
                repo = json.loads(line).get("repo")
                names.update([repo.lower()] if repo else [])
            else:
                for token in line.split("#", 1)[0].split():  # owner/name, or a URL ending in owner/name(.git)
                    parts = [p for p in re.split(r"[/:]", token.removesuffix("/").removesuffix(".git")) if p]
                    if len(parts) >= 2 and _OWNER_NAME.fullmatch(f"{parts[-2]}/{parts[-1]}"):
                        names.add(f"{parts[-2]}/{parts[-1]}".lower())
    return names


def repository_full_names(path: str | Path) -> list[str]:
    """``owner/name`` (lower case) that a repository is known by: a mirror's ``owner+name`` folder, its remotes."""
    resolved = Path(path).resolve()
    names = []
    for part in (resolved.name, resolved.parent.name):
        owner, plus, name = part.partition("+")
        if plus and owner and name:
            names.append(f"{owner}/{name.removesuffix('.git')}")
    try:
        remotes = git(path, "config", "--get-regexp", r"^remote\..*\.url$")
    except GitError:  # no remotes configured
        remotes = ""
    for line in remotes.splitlines():
        parts = re.split(r"[/:]", line.split(maxsplit=1)[-1].rstrip("/"))
        if len(parts) >= 2 and parts[-2] and parts[-1]:
            names.append(f"{parts[-2]}/{parts[-1].removesuffix('.git')}")
    return [n.lower() for n in names]


def refuse_reserved(path: str | Path, reserved: Iterable[str]) -> None:
    """Raise ValueError when the repository is one of ``reserved`` (``owner/name``): by its full names, or, for
    a repository known by no owner (a plain clone without remotes), by its folder name."""
    reserved = {r.lower() for r in reserved}
    full = repository_full_names(path)
    hit = next((n for n in full if n in reserved), None)
    if hit is None and not full:
        bare = {r.split("/")[-1]: r for r in reserved}
        hit = next((bare[n] for n in _repo_names(Path(path)) if n in bare), None)
    if hit is not None:
        raise ValueError(f"{path} is {hit}, a repository of the localization benchmark (held out from training); "
                         "its history must not be mined")


def _parse_raw(lines: str) -> list[FileChange]:
    """``:100644 100644 <old> <new> M\tpath`` lines (``git log --raw``): reading them needs no file contents."""
    files = []
    for line in lines.splitlines():
        if not line.startswith(":") or "\t" not in line:
            continue
        meta, path = line.split("\t", 1)
        if path.startswith('"') and path.endswith('"'):  # git quotes unusual names
            path = path[1:-1].encode("latin-1", errors="replace").decode("unicode_escape", errors="replace")
            path = path.encode("latin-1", errors="replace").decode("utf-8", errors="replace")
        files.append(FileChange(path, meta.split()[-1][:1]))
    return files


def iter_commits(repo: str | Path, rev: str = "HEAD", max_count: int | None = None,
                 merges: bool = False) -> Iterator[Commit]:
    """Non-merge commits reachable from ``rev``, newest first, with their changed files (renames as delete + add).

    ``merges`` adds the merge commits, their files compared with their first parent (a pull request's
    whole change). Only commits and trees are read (``--raw``, not ``--numstat``), so a mirror whose
    largest blobs are absent can still be walked; diffs are read per commit by ``commit_diff``."""
    args = ["git", "-C", str(repo), "log", "--diff-merges=first-parent" if merges else "--no-merges",
            "--no-renames", "--raw", "--no-abbrev", f"--format={_LOG_FORMAT}"]
    if max_count is not None:
        args.append(f"--max-count={max_count}")
    args += [rev, "--"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        buffer = ""
        while True:
            block = proc.stdout.read(1 << 16)
            if block:
                buffer += block.decode("utf-8", errors="replace")
            records = buffer.split(_RECORD)
            buffer = records.pop() if block else ""
            for record in (records if block else [*records, buffer]):
                if record.strip():
                    yield _parse_record(record)
            if not block:
                break
        err = proc.stderr.read().decode("utf-8", errors="replace").strip() if proc.stderr else ""
        if proc.wait() != 0:
            raise GitError(f"git log failed in {repo}: {err.splitlines()[-1] if err else proc.returncode}")


def _parse_record(record: str) -> Commit:
    sha, parents, author, email, timestamp, message, raw = record.split(_FIELD, 6)
    return Commit(
        sha=sha.strip(), parent=(parents.split() or [None])[0], author=author, email=email,
        timestamp=int(timestamp), message=message.strip(), files=_parse_raw(raw), merge=len(parents.split()) > 1,
    )


# ------------------------------------------------------------------------------------ messages

_TRAILER_KEYS = (
    r"signed-off-by|co-authored-by|co-authored|reviewed-by|acked-by|tested-by|reported-by|suggested-by|"
    r"helped-by|requested-by|approved-by|cc|change-id|pr-url|pull-request|see-also|backport-of|git-svn-id|"
    r"original-commit"
)
_TRAILER_LINE = re.compile(rf"^\s*({_TRAILER_KEYS})\s*:\s*\S.*$", re.IGNORECASE)
_ANY_TRAILER = re.compile(r"^[A-Za-z]\w*(-\w+)+:\s+\S.*$")  # Reviewed-by:, Change-Id:, ... (not "Fixes: a crash")
_REF_ONLY = re.compile(
    r"^\s*(?:(?:closes|closed|fixes|fixed|fix|resolves|resolved|refs?|see|related to|part of|pr|pull request)\b[:\s]*)?"
    r"(?:[,;]?\s*(?:#\d+|gh-\d+|[\w.-]+/[\w.-]+#\d+|https?://\S+))+\s*\.?\s*$",
    re.IGNORECASE,
)
_PR_REF = re.compile(
    r"\s*\((?:#|gh-|PR\s*#?)\d+(?:\s*,\s*#\d+)*\)|\s*\[(?:ci skip|skip ci|skip-ci|no ci)\]", re.IGNORECASE
)
_RULE = re.compile(r"^\s*([-=*_~])\1{2,}\s*$")
_CHERRY = re.compile(r"^\s*\(cherry picked from commit [0-9a-f]+\)\s*$", re.IGNORECASE)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_CHECKLIST = re.compile(r"^\s*[-*]\s*\[[ xX]\]")
_SQUASH_NOISE = re.compile(
    r"^\s*(?:\*\s*)?(?:Merge branch|Merge remote-tracking branch|Merge pull request)\b.*$|"
    # the bullets of a squash merge that only say "fixed the chores": changelog, lint, review, "Update x.py"
    r"^\s*\*\s+(?:#\d+\s+)?(?:(?:add|added|update|updated|fix|fixed|apply|applied|address|run|ran)\s+)?(?:the\s+)?"
    r"(?:changes|changelog|change ?log entry|history|news|release notes|lint|linting|linter|formatting|format|typos?|"
    r"mypy|black|ruff|flake8|isort|pre-commit|review|review comments?|comments?|suggestions?|feedback|wip|fixup|tmp|"
    r"tests?|docs?)\b[^\n]{0,40}$|"
    r"^\s*\*\s+Update [\w./-]+\.\w+$",
    re.IGNORECASE,
)


def clean_message(message: str, max_chars: int = 1500) -> str:
    """The message without trailers (Signed-off-by, Co-authored-by, ...), PR/issue references and PR-template noise."""
    text = _HTML_COMMENT.sub("", message.replace("\r\n", "\n"))
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    # A final paragraph made only of "Key: value" lines is a trailer block (git's own definition).
    while len(paragraphs) > 1 and all(
        _ANY_TRAILER.match(line) or _TRAILER_LINE.match(line) or _REF_ONLY.match(line)
        for line in paragraphs[-1].strip().splitlines()
    ):
        paragraphs.pop()
    if not paragraphs:
        return ""
    first, _, rest = paragraphs[0].strip().partition("\n")
    subject = _PR_REF.sub("", first).strip()
    kept_paragraphs = [subject] if subject else []
    for paragraph in ([rest] if rest.strip() else []) + paragraphs[1:]:
        lines = [
            _PR_REF.sub("", line).rstrip()
            for line in paragraph.split("\n")
            if not (_TRAILER_LINE.match(line) or _REF_ONLY.match(line) or _CHERRY.match(line)
                    or _CHECKLIST.match(line) or _SQUASH_NOISE.match(line) or _RULE.match(line))
        ]
        # a squash merge repeats the subject as its first bullet
        lines = [line for line in lines if line.strip() and _PR_REF.sub("", line).strip(" *-") != subject]
        if lines:
            kept_paragraphs.append("\n".join(lines))
    out = "\n\n".join(kept_paragraphs).strip()
    if len(out) > max_chars:  # cut at a paragraph, else at a line, else hard
        cut = out.rfind("\n\n", 0, max_chars)
        cut = cut if cut > max_chars // 3 else out.rfind("\n", 0, max_chars)
        out = out[: cut if cut > max_chars // 3 else max_chars].rstrip()
    return out


_PR_MERGE = re.compile(r"^Merge pull request #\d+ from \S+[^\n]*\n?", re.IGNORECASE)


def commit_query(commit: Commit, max_chars: int = 1500) -> str:
    """The query text of a commit: its cleaned message; for a pull-request merge, the PR's title and text
    that GitHub writes under "Merge pull request #N from ..." (empty when there is none, so it is skipped)."""
    message = commit.message
    if commit.merge:
        body = _PR_MERGE.sub("", message.strip(), count=1)
        if body == message.strip():  # "Merge branch 'x'" and other merges that carry no PR text
            return clean_message(message, max_chars)
        message = body
    return clean_message(message, max_chars)


_BOT = re.compile(
    r"\[bot\]|dependabot|renovate|pre-commit-ci|github-actions|allcontributors|greenkeeper|snyk-bot|pyup", re.IGNORECASE
)
_CONVENTIONAL = re.compile(r"^(?:[^\w\s`\"'(\[]+\s*)?(?:[\w-]+(?:\([^)]*\))?!?:\s+)?")  # emoji, "type(scope): "
_SKIP_SUBJECTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("revert", re.compile(r"^(revert|reapply|undo)\b", re.IGNORECASE)),
    ("merge", re.compile(r"^merge\b", re.IGNORECASE)),
    ("version bump", re.compile(
        r"^(bump|bumped|v?\d+(\.\d+)+\b|version\s+v?\d|"
        r"(release[ds]?|releasing|prepar\w* (for )?(the )?(next )?release)(\s+(version\s+)?v?\d\S*|:|\s*$)|"
        r"update (the )?(changelog|changes|version|history)|changelog|news\b)|\bbump(ed|s)? (the )?version\b|"
        r"\bversion bump\b|\brelease v?\d+(\.\d+)+|pre-commit autoupdate|^\[pre-commit",
        re.IGNORECASE,
    )),
    ("typo only", re.compile(r"^\W*(fix(e[sd])?|correct(ed|s)?|minor)?\s*(a |an |the |some |more |minor |small |few |several |various )*"
                             r"(typos?|spelling|misspell\w*|grammar)\b", re.IGNORECASE)),
    ("work in progress", re.compile(r"^(wip|tmp|temp|fixup!|squash!|amend!)\b", re.IGNORECASE)),
)


def message_skip_reason(commit: Commit, cleaned: str, min_chars: int = 15, min_words: int = 3) -> str | None:
    """Why a commit's message makes no query (bot, revert, merge, version bump, typo only, too short), or None."""
    if _BOT.search(commit.author) or _BOT.search(commit.email):
        return "bot author"
    subject = cleaned.split("\n", 1)[0].strip()
    core = _CONVENTIONAL.sub("", subject)  # "docs(readme): fix typos" is judged as "fix typos"
    for reason, pattern in _SKIP_SUBJECTS:
        if pattern.search(subject) or pattern.search(core):
            return reason
    if len(cleaned) < min_chars or len(cleaned.split()) < min_words:
        return "message too short"
    return None


# --------------------------------------------------------------------------------------- diffs


def is_code_path(path: str, include_tests: bool = False) -> bool:
    """True for a source file of a parsed language (not generated, not a test unless ``include_tests``)."""
    if GENERATED_NAMES.search(Path(path).name):
        return False
    if detect_language(path) not in SUPPORTED_LANGUAGES:
        return False
    return include_tests or not is_test_path(path)


def commit_diff(repo: str | Path, commit: Commit, paths: list[str], context: int = 3) -> str:
    """The unified diff of ``paths`` in ``commit`` against its first parent (headers kept, ``index`` lines dropped)."""
    if not paths:
        return ""
    base = commit.parent or "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree, for a root commit
    out = git(repo, "diff", "--no-color", "--no-ext-diff", "--no-renames", f"-U{context}", base, commit.sha, "--",
              *paths)
    return "\n".join(line for line in out.split("\n") if not line.startswith("index ")).strip("\n")


def cap_diff(diff: str, max_chars: int) -> str | None:
    """Whole hunks of ``diff`` (each with its file header) up to ``max_chars``; None when not even one hunk fits."""
    if len(diff) <= max_chars:
        return diff
    out: list[str] = []
    size = 0
    header: list[str] = []
    header_written = False
    hunk: list[str] = []

    def flush() -> bool:
        nonlocal size, header_written
        if not hunk:
            return True
        block = ([] if header_written else header) + hunk
        block_size = sum(len(line) + 1 for line in block)
        if size + block_size > max_chars:
            return False
        out.extend(block)
        size += block_size
        header_written = True
        return True

    for line in diff.split("\n"):
        if line.startswith("diff --git "):
            if not flush():
                break
            header, hunk, header_written = [line], [], False
        elif line.startswith("@@"):
            if not flush():
                break
            hunk = [line]
        elif hunk:
            hunk.append(line)
        else:
            header.append(line)
    else:
        flush()
    return "\n".join(out) if out else None


@dataclass
class CommitConfig:
    """Filters and caps of commit-pair mining."""

    include_tests: bool = False  # test files in the diff (a tests-only commit is then kept too)
    max_files: int = 8  # source files changed, at most
    max_changed_lines: int = 400  # lines added + deleted in those files, at most (larger commits are skipped)
    max_diff_chars: int = 4000  # the document is cut to whole hunks under this
    min_diff_chars: int = 40
    max_query_chars: int = 1500
    min_query_chars: int = 15
    context_lines: int = 3
    max_commits: int | None = None  # newest commits read per repository
    rev: str = "HEAD"

    def __post_init__(self) -> None:
        for name in ("max_files", "max_changed_lines", "max_diff_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number")
        if self.max_commits is not None and self.max_commits < 1:
            raise ValueError("max_commits must be a positive number (or None for the whole history)")


def diff_stats(diff: str) -> dict[str, int]:
    """Lines added plus deleted per file of a unified diff."""
    counts: dict[str, int] = {}
    current = ""
    for line in diff.split("\n"):
        if line.startswith("diff --git "):
            current = line.rsplit(" b/", 1)[-1]
            counts[current] = 0
        elif line.startswith(("+++ ", "--- ")):
            continue
        elif line[:1] in ("+", "-") and current:
            counts[current] += 1
    return counts


def main_language(changed: dict[str, int]) -> str:
    """The language of the file with the most changed lines."""
    return detect_language(max(changed, key=changed.get)) or "unknown"


def commit_pairs(
    repo: str | Path, source: str | None = None, cfg: CommitConfig | None = None, report: MineReport | None = None,
    progress: bool = False, rev: str | None = None,
) -> list[Pair]:
    """nl2code pairs of a repository's history (from ``rev``, default ``cfg.rev``): cleaned commit message ->
    diff of the source files it changed."""
    from tqdm.auto import tqdm

    cfg = cfg or CommitConfig()
    report = report if report is not None else MineReport()
    repo = open_repository(repo)
    source = source or _default_source(repo)
    pairs: list[Pair] = []
    for commit in tqdm(iter_commits(repo, rev or cfg.rev, cfg.max_commits), desc=f"commits {source}", unit="commit",
                       disable=not progress):
        report.commits[source] = report.commits.get(source, 0) + 1
        pair = _commit_pair(repo, commit, source, cfg, report)
        if pair is not None:
            pairs.append(pair)
    return pairs


def _commit_pair(repo: Path, commit: Commit, source: str, cfg: CommitConfig, report: MineReport) -> Pair | None:
    query = clean_message(commit.message, cfg.max_query_chars)
    reason = message_skip_reason(commit, query, cfg.min_query_chars)
    if reason:
        report.drop(f"commit: {reason}")
        return None
    code = [f.path for f in commit.files if f.status in "AMDT" and is_code_path(f.path, cfg.include_tests)]
    if not code:
        report.drop("commit: no source files changed")
        return None
    if len(code) > cfg.max_files:
        report.drop("commit: diff too large")
        return None
    try:
        full = commit_diff(repo, commit, code, cfg.context_lines)
    except GitError:  # a mirror without some large blobs
        report.drop("commit: objects missing")
        return None
    changed = diff_stats(full)
    if not any(changed.values()):
        report.drop("commit: empty diff")
        return None
    if sum(changed.values()) > cfg.max_changed_lines:
        report.drop("commit: diff too large")
        return None
    diff = cap_diff(full, cfg.max_diff_chars)
    if diff is None:
        report.drop("commit: diff too large")
        return None
    if len(diff) < cfg.min_diff_chars:
        report.drop("commit: empty diff")
        return None
    return Pair("nl2code", query, diff, main_language(changed), source, ",".join(p for p in changed), commit.sha)


def _default_source(repo: Path) -> str:
    resolved = repo.resolve()
    # a source name holds no "/" (the stats group sources by their first "/" part): owner+name stays as it is
    if resolved.name in ("repo", ".git"):
        return resolved.parent.name
    return resolved.name.removesuffix(".git")
