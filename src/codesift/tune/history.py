"""What `codesift tune` learns from: a repository's own history, split in time.

The repository is checked first (a history, not shallow, a clean tree, a language the chunker knows); each
refusal is a ``RepositoryProblem`` that says what to do and changes nothing. Then the split: the newest
usable commits (a message that makes a query, an existing source file changed) are held out, and every
training pair comes from the tree and history before them, at ``cutoff``, the parent of the oldest held-out
commit:

- localization pairs: commit message -> the chunks it changed at its parent, with in-repository BM25 and
  same-file hard negatives (``data.commit_chunks``), held-out commits never selected;
- docstring pairs: a unit's docstring or leading comment -> its code (``data.mining.pairs_from_text``), from the
  source files at ``cutoff``.

No pair whose document, and no negative, equals a held-out gold chunk is kept, so no held-out answer is
ever trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from codesift.data.chunking import Chunk, PieceCounter
from codesift.data.commit_chunks import (
    BlobReader,
    ChunkPairConfig,
    FileChunks,
    LexicalIndex,
    changed_chunk_pairs,
    localizable_files,
    queried_commits,
    tree_files,
)
from codesift.data.commits import Commit, GitError, git, is_code_path
from codesift.data.files import source_from_bytes
from codesift.data.languages import SUPPORTED_LANGUAGES, detect_language
from codesift.data.mining import MineConfig, MineReport, pairs_from_text, text_hash
from codesift.data.pair import Pair

log = logging.getLogger(__name__)


class RepositoryProblem(ValueError):
    """The repository cannot be tuned on as it is (the message says why and what to do); nothing was changed."""


@dataclass
class SplitConfig:
    """How the history is mined and split."""

    held_out_fraction: float = 0.1     # the newest tenth of the usable commits ...
    held_out_min: int = 10             # ... but at least this many ...
    held_out_max: int = 50             # ... and at most this many
    min_train_commits: int = 10        # usable commits needed before the held-out ones
    mining: ChunkPairConfig = field(default_factory=ChunkPairConfig)
    max_doc_files: int = 3000          # source files read for docstring pairs (sampled past this)

    def needed(self) -> int:
        """Usable commits a repository needs."""
        return self.held_out_min + self.min_train_commits


def held_out_count(usable: int, cfg: SplitConfig) -> int:
    """How many of ``usable`` commits to hold out: the fraction, clamped to [min, max]."""
    return max(cfg.held_out_min, min(cfg.held_out_max, round(usable * cfg.held_out_fraction)))


@dataclass
class HeldOutCommit:
    """A held-out commit as a localization case: its message and the files it changed (that were in ``cutoff``)."""

    sha: str
    query: str
    files: list[str]


@dataclass
class TimeSplit:
    """The held-out commits (newest first), the training cutoff, and the usable commits found."""

    head: str
    cutoff: str
    held_out: list[HeldOutCommit]
    usable: int


def check_repository(path: str | Path) -> Path:
    """The work tree's root at ``path``, checked to have a history, all of it, no uncommitted changes to tracked
    files and source files the chunker reads; a ``RepositoryProblem`` otherwise."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise RepositoryProblem(f"{path} is not a folder; pass the root of a git repository")
    try:
        root = Path(git(path, "rev-parse", "--show-toplevel").strip())
    except GitError:
        raise RepositoryProblem(f"{path} is not in a git repository: `codesift tune` learns from the commit history; "
                                "run it in a clone") from None
    try:
        git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except GitError:
        raise RepositoryProblem(f"{root} has no commits yet: there is no history to learn from") from None
    if git(root, "rev-parse", "--is-shallow-repository").strip() == "true":
        raise RepositoryProblem(f"{root} is a shallow clone (its older history is missing); run "
                                "`git fetch --unshallow` first")
    dirty = git(root, "status", "--porcelain", "--untracked-files=no").splitlines()
    if dirty:
        raise RepositoryProblem(f"{root} has uncommitted changes to {len(dirty)} tracked file(s) "
                                f"(e.g. {dirty[0][3:]}); commit or stash them, so that the index and the history agree")
    files = [p for p in git(root, "ls-files", "-z").split("\0") if p]
    if not any(is_code_path(p, include_tests=True) for p in files):
        raise RepositoryProblem(f"{root} holds no source file in a language the chunker knows "
                                f"({', '.join(sorted(SUPPORTED_LANGUAGES))})")
    return root


def split_history(root: Path, cfg: SplitConfig, report: MineReport | None = None) -> TimeSplit:
    """Hold out the newest usable commits of HEAD's history; a ``RepositoryProblem`` when there are too few."""
    report = report if report is not None else MineReport()
    head = git(root, "rev-parse", "HEAD").strip()
    usable: list[tuple[Commit, str, list[str]]] = []
    for commit, query in queried_commits(root, cfg.mining, report, "tune", head):
        files, _ = localizable_files(commit, cfg.mining)
        if files:
            usable.append((commit, query, files))
    if len(usable) < cfg.needed():
        raise RepositoryProblem(f"{root} has {len(usable)} usable commit(s) (a descriptive message and a change to an "
                                f"existing source file) of {cfg.mining.max_commits or 'all'} read; `codesift tune` "
                                f"needs at least {cfg.needed()} ({cfg.held_out_min} held out to measure, "
                                f"{cfg.min_train_commits} to learn from)")
    n = held_out_count(len(usable), cfg)
    held = usable[:n]
    cutoff = held[-1][0].parent
    assert cutoff is not None  # a usable commit changed a file that was in its parent
    at_cutoff = set(tree_files(root, cutoff))
    cases = [HeldOutCommit(c.sha, q, [f for f in files if f in at_cutoff]) for c, q, files in held]
    return TimeSplit(head, cutoff, [c for c in cases if c.files], len(usable))


def tree_chunks(root: Path, rev: str, cfg: ChunkPairConfig, counter: PieceCounter | None) -> list[Chunk]:
    """The chunks of the source files (tests left out) of ``rev``, cut as the index cuts them."""
    report = MineReport()
    with BlobReader(root) as blobs:
        files = FileChunks(blobs, cfg, counter, report)
        return [c for p in tree_files(root, rev) if is_code_path(p, cfg.include_tests)
                for c in files.at(rev, p) if c.text.strip()]


def held_out_gold(root: Path, split: TimeSplit, cfg: ChunkPairConfig, counter: PieceCounter | None) -> set[str]:
    """Hashes of the chunks the held-out commits changed (at their parents): texts no training pair may hold."""
    held = {c.sha for c in split.held_out}
    pairs = changed_chunk_pairs(root, "held-out", replace(cfg, lexical_negatives=0, neighbour_negatives=0),
                                counter=counter, rev=split.head, reserved=set(), select=lambda c: c.sha in held)
    return {text_hash(p.document) for p in pairs}


def docstring_pairs(root: Path, rev: str, cfg: SplitConfig, source: str, report: MineReport) -> list[Pair]:
    """Docstring (or leading comment) -> code pairs of the source files at ``rev`` (nl2code only)."""
    import random

    mine_cfg = MineConfig(tasks=("nl2code",))
    paths = [p for p in tree_files(root, rev) if is_code_path(p)]
    if len(paths) > cfg.max_doc_files:
        paths = sorted(random.Random(0).sample(paths, cfg.max_doc_files))
    pairs: list[Pair] = []
    with BlobReader(root) as blobs:
        for path in paths:
            found = blobs.read(rev, path)
            if found is None or len(found[1]) > mine_cfg.max_file_bytes:
                continue
            text, reason = source_from_bytes(found[1], path)
            if text is None:
                report.skip(reason or "unreadable", path)
                continue
            language = detect_language(path, text.split("\n", 1)[0])
            try:
                pairs.extend(pairs_from_text(text, language, source, path, mine_cfg, report))
            except Exception as exc:  # noqa: BLE001 - a parser bug must not end the run (as in data.mining.mine_file)
                log.warning("could not mine %s: %s", path, exc)
    return pairs


def training_pairs(root: Path, split: TimeSplit, cfg: SplitConfig, counter: PieceCounter | None,
                   make_index: type[LexicalIndex] | None, report: MineReport) -> tuple[list[Pair], dict[str, int]]:
    """Every training pair of the split (localization + docstring), none holding a held-out answer; with the
    count of each kind."""
    held = {c.sha for c in split.held_out}
    gold = held_out_gold(root, split, cfg.mining, counter)
    commits = changed_chunk_pairs(root, "commits", cfg.mining, report, counter=counter, make_index=make_index,
                                  rev=split.cutoff, reserved=set(), select=lambda c: c.sha not in held)
    docs = docstring_pairs(root, split.cutoff, cfg, "docstrings", report)
    kept: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for pair in commits + docs:
        key = (text_hash(pair.query), text_hash(pair.document))
        if key[1] in gold or key in seen:
            report.drop("held-out answer" if key[1] in gold else "duplicate")
            continue
        seen.add(key)
        negatives = tuple(n for n in pair.negatives if text_hash(n) not in gold)
        kept.append(replace(pair, negatives=negatives) if len(negatives) < len(pair.negatives) else pair)
    counts = {"commit_pairs": sum(1 for p in kept if p.source == "commits"),
              "docstring_pairs": sum(1 for p in kept if p.source == "docstrings")}
    return kept, counts
