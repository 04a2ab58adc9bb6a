"""Localization pairs from git history: commit message -> the chunks it changed, as they stood at its parent.

The query is what a developer or an agent types (a commit message, or the text of a pull-request merge);
the document is a chunk exactly as ``codesift index`` would have embedded it at the commit's parent: the
parent's version of each changed file (``git cat-file``, nothing is checked out) is cut by the index's
chunker (``data.chunking.chunk_text``) with the index model's token counter, and a chunk is *changed*
when it overlaps the old side of a hunk of ``git diff -U0 PARENT COMMIT`` (an insertion counts when it
falls inside the chunk).

Each pair carries hard negatives from the same repository:

- lexical: the best hits for the message among the chunks of one snapshot of the repository (the
  parent of the middle commit of the mined window), from a lexical index the caller supplies (BM25);
- a neighbour: the nearest unchanged chunk of the gold chunk's own file, at the same parent.

False negatives are filtered: no lexical hit from a file the commit touched (its snapshot version may
be the gold or a near copy of it); no negative whose text equals, contains, is contained in or is a
near duplicate (Jaccard of token 3-gram shingles >= ``near_duplicate``) of any gold chunk of the commit.
"""

from __future__ import annotations

import logging
import random
import re
import subprocess
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from codesift.data.chunking import Chunk, PieceCounter, chunk_text
from codesift.data.commits import (
    Commit,
    GitError,
    commit_diff,
    commit_query,
    is_code_path,
    iter_commits,
    message_skip_reason,
    open_repository,
    refuse_reserved,
    reserved_repositories,
)
from codesift.data.decontam import shingles
from codesift.data.files import source_from_bytes
from codesift.data.languages import detect_language
from codesift.data.mining import MineReport, normalize, text_hash
from codesift.data.pair import Pair

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

logger = logging.getLogger(__name__)

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@")


class LexicalIndex(Protocol):
    """What the miner needs from a lexical index (``eval.bm25.BM25Index`` is one)."""

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and document indices of the ``k`` best documents per query, best first."""


@dataclass
class ChunkPairConfig:
    """Filters, caps and negatives of localization-pair mining."""

    max_commits: int | None = 1500  # newest commits read per repository
    rev: str = "HEAD"
    merges: bool = True  # pull-request merges with a text, compared with their first parent
    max_files: int = 5  # commits changing more source files are skipped (one huge commit must not dominate)
    max_chunks: int = 3  # gold chunks per commit
    min_chunk_chars: int = 40
    max_query_chars: int = 1500
    min_query_chars: int = 15
    include_tests: bool = False
    max_tokens: int = 512  # the chunker's limit: the index's (``min(IndexConfig.max_tokens, model max_length)``)
    lexical_negatives: int = 2
    neighbour_negatives: int = 1
    lexical_depth: int = 50  # lexical hits looked at per query
    near_duplicate: float = 0.6  # Jaccard (3-gram shingles) with a gold chunk at or above which a negative is dropped
    max_snapshot_files: int = 400  # snapshot files indexed for lexical negatives (touched ones first, then sampled)
    max_file_bytes: int = 2_000_000  # the index's limit

    def __post_init__(self) -> None:
        for name in ("max_files", "max_chunks", "max_tokens", "lexical_depth", "max_snapshot_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number")
        if not 0 < self.near_duplicate <= 1:
            raise ValueError("near_duplicate must be in (0, 1]")


class BlobReader:
    """File contents at any commit through one ``git cat-file --batch`` process (no checkout)."""

    def __init__(self, repo: str | Path) -> None:
        self._proc = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def read(self, rev: str, path: str) -> tuple[str, bytes] | None:
        """``(blob id, bytes)`` of ``path`` at ``rev``; None when it is absent, not a file, or has an odd name."""
        if "\n" in path or not path:
            return None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{rev}:{path}\n".encode("utf-8", errors="surrogateescape"))
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3:  # "<name> missing" / "ambiguous"
            return None
        data = self._proc.stdout.read(int(header[2]))
        self._proc.stdout.read(1)  # the newline after the contents
        return (header[0].decode(), data) if header[1] == b"blob" else None

    def close(self) -> None:
        """End the git process."""
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileChunks:
    """The index's chunks of a file at a commit, remembered by blob id and path (a version is chunked once)."""

    def __init__(self, blobs: BlobReader, cfg: ChunkPairConfig, counter: PieceCounter | None,
                 report: MineReport, capacity: int = 4096) -> None:
        self.blobs, self.cfg, self.counter, self.report = blobs, cfg, counter, report
        self._cache: OrderedDict[str, list[Chunk]] = OrderedDict()
        self.capacity = capacity

    def at(self, rev: str, path: str) -> list[Chunk]:
        """Chunks of ``path`` at ``rev`` (empty when absent, binary, generated, too large or unparsed)."""
        found = self.blobs.read(rev, path)
        if found is None:
            return []
        blob, data = found
        key = f"{blob}:{path}"  # a chunk names its path: the same blob elsewhere (a copy, a move) is chunked again
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        chunks: list[Chunk] = []
        if len(data) <= self.cfg.max_file_bytes:
            text, reason = source_from_bytes(data, path)
            if text is not None:
                language = detect_language(path, text.split("\n", 1)[0])
                chunks = chunk_text(text, path, language, max_tokens=self.cfg.max_tokens, counter=self.counter)
            else:
                self.report.skip(reason or "unreadable", path)
        self._cache[key] = chunks
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return chunks


@dataclass
class SnapshotChunks:
    """The chunks of one tree of the repository and a lexical index over them (the source of lexical negatives)."""

    rev: str
    chunks: list[Chunk] = field(default_factory=list)
    index: LexicalIndex | None = None

    def search(self, query: str, k: int) -> list[Chunk]:
        """The ``k`` best chunks for ``query``, best first (none without an index)."""
        if self.index is None or not self.chunks:
            return []
        scores, idx = self.index.search([query], k)
        return [self.chunks[int(i)] for s, i in zip(scores[0], idx[0]) if s > 0]


def snapshot_chunks(rev: str, files: FileChunks, list_files: Callable[[str], list[str]], cfg: ChunkPairConfig,
                    make_index: Callable[[list[str]], LexicalIndex] | None, hot: set[str] = frozenset()) -> SnapshotChunks:
    """Chunk the source files of ``rev`` and index them: at most ``cfg.max_snapshot_files``, the ``hot`` ones (the
    files the mined commits touched, where a message is most easily confused) first, then a sample of the rest."""
    paths = sorted(p for p in list_files(rev) if is_code_path(p, cfg.include_tests))
    if len(paths) > cfg.max_snapshot_files:
        rng = random.Random(0)
        first = [p for p in paths if p in hot]
        rest = [p for p in paths if p not in hot]
        if len(first) >= cfg.max_snapshot_files:
            paths = sorted(rng.sample(first, cfg.max_snapshot_files))
        else:
            paths = sorted(first + rng.sample(rest, cfg.max_snapshot_files - len(first)))
    chunks = [c for p in paths for c in files.at(rev, p) if len(c.text.strip()) >= cfg.min_chunk_chars]
    index = make_index([c.text for c in chunks]) if make_index is not None and chunks else None
    return SnapshotChunks(rev, chunks, index)


def old_side_changes(diff: str) -> dict[str, tuple[list[tuple[int, int]], list[int]]]:
    """Per file of a ``-U0`` diff: the old side's changed line spans (1-based, inclusive) and the lines after
    which lines were only inserted."""
    out: dict[str, tuple[list[tuple[int, int]], list[int]]] = {}
    current: tuple[list[tuple[int, int]], list[int]] | None = None
    for line in diff.split("\n"):
        if line.startswith("diff --git "):
            current = None
        elif line.startswith("--- "):
            name = line[4:].rstrip("\t")
            current = out.setdefault(name[2:], ([], [])) if name.startswith("a/") else None
        elif line.startswith("@@") and current is not None:
            match = _HUNK.match(line)
            if match:
                start, count = int(match.group(1)), int(match.group(2) if match.group(2) is not None else 1)
                if count:
                    current[0].append((start, start + count - 1))
                else:
                    current[1].append(start)
    return out


def changed_lines(chunk: Chunk, spans: list[tuple[int, int]], inserts: list[int]) -> int:
    """How many of the chunk's lines the commit changed (an insertion strictly inside it counts one)."""
    n = sum(max(0, min(end, chunk.end_line) - max(start, chunk.start_line) + 1) for start, end in spans)
    return n + sum(1 for after in inserts if chunk.start_line <= after < chunk.end_line)


def _too_close(text: str, gold: Sequence[tuple[str, str, set[bytes]]], threshold: float) -> bool:
    """True when ``text`` equals, contains, is inside, or nearly duplicates a gold chunk's text."""
    norm = normalize(text)
    sh = None
    for gold_norm, gold_hash, gold_sh in gold:
        if text_hash(text) == gold_hash or gold_norm in norm or norm in gold_norm:
            return True
        sh = sh if sh is not None else shingles(text)
        if sh and gold_sh and len(sh & gold_sh) / len(sh | gold_sh) >= threshold:
            return True
    return False


def _symbol_first(item: tuple[Chunk, int, int]) -> tuple[int, int]:
    chunk, changed, _ = item
    return (0 if chunk.kind in ("function", "method", "class") else 1, -changed)


def localizable_files(commit: Commit, cfg: ChunkPairConfig) -> tuple[list[str], str | None]:
    """The source files a commit changed that were in its parent (what a search at the parent can find), or
    why the commit localizes nothing (no source files, too many, only new files)."""
    code = [f for f in commit.files if is_code_path(f.path, cfg.include_tests)]
    if not code:
        return [], "no source files changed"
    if len(code) > cfg.max_files:
        return [], "too many files"
    before = [f.path for f in code if f.existed_before]
    if commit.parent is None or not before:
        return [], "only new files"
    return before, None


def commit_chunk_pairs(commit: Commit, query: str, source: str, cfg: ChunkPairConfig, files: FileChunks,
                       diff_of: Callable[[Commit, list[str]], str], snapshot: SnapshotChunks | None,
                       report: MineReport) -> list[Pair]:
    """The pairs of one commit: ``query`` -> each of its (at most ``cfg.max_chunks``) changed parent chunks."""
    before, reason = localizable_files(commit, cfg)
    if reason:
        report.drop(f"commit: {reason}")
        return []
    try:
        changes = old_side_changes(diff_of(commit, before))
    except GitError:  # a mirror without some large blobs
        report.drop("commit: objects missing")
        return []
    changed: list[tuple[Chunk, int, int]] = []  # (chunk, lines changed, its index in the file)
    parent_chunks: dict[str, list[Chunk]] = {}
    for path in before:
        spans, inserts = changes.get(path, ([], []))
        if not spans and not inserts:
            continue
        parent_chunks[path] = chunks = files.at(commit.parent, path)
        for i, chunk in enumerate(chunks):
            n = changed_lines(chunk, spans, inserts)
            if n and len(chunk.text.strip()) >= cfg.min_chunk_chars:
                changed.append((chunk, n, i))
    if not changed:
        report.drop("commit: no changed chunk at the parent")
        return []
    # every changed chunk, kept or not, is kept out of the negatives
    all_changed = {(c.path, c.start_line) for c, _, _ in changed}
    gold_keys = [(normalize(c.text), text_hash(c.text), shingles(c.text)) for c, _, _ in changed]
    changed.sort(key=_symbol_first)
    if any(c.kind in ("function", "method", "class") for c, _, _ in changed):  # import lists etc. only as a last resort
        changed = [item for item in changed if item[0].kind != "block" or item[0].symbol] or changed
    gold = changed[: cfg.max_chunks]
    if len(changed) > cfg.max_chunks:
        report.drop("chunk: over the per-commit cap", len(changed) - cfg.max_chunks)
    touched = {f.path for f in commit.files}
    lexical = []
    if snapshot is not None and cfg.lexical_negatives:
        for hit in snapshot.search(query, cfg.lexical_depth):
            if hit.path in touched or _too_close(hit.text, gold_keys, cfg.near_duplicate):
                continue
            lexical.append(hit.text)
            if len(lexical) == cfg.lexical_negatives:
                break
    pairs = []
    for chunk, _, index in gold:
        neighbours = _neighbours(parent_chunks[chunk.path], index, all_changed, gold_keys, cfg)
        negatives = list(dict.fromkeys(lexical[:1] + neighbours + lexical[1:]))
        pairs.append(Pair("nl2code", query, chunk.text, chunk.language or "", source, chunk.path, chunk.symbol or "",
                          negatives=tuple(negatives)))
    return pairs


def _neighbours(chunks: list[Chunk], index: int, changed: set[tuple[str, int]],
                gold_keys: Sequence[tuple[str, str, set[bytes]]], cfg: ChunkPairConfig) -> list[str]:
    """The nearest unchanged chunks of the gold chunk's file (named units before blocks at equal distance), not
    pieces of the gold's own unit."""
    if not cfg.neighbour_negatives:
        return []
    symbol = chunks[index].symbol  # another piece of the gold's own function is not a negative
    order = sorted((i for i in range(len(chunks)) if i != index),
                   key=lambda i: (abs(i - index), chunks[i].symbol is None, i))
    out = []
    for i in order:
        c = chunks[i]
        if (c.path, c.start_line) in changed or len(c.text.strip()) < cfg.min_chunk_chars:
            continue
        if symbol and c.symbol == symbol:
            continue
        if _too_close(c.text, gold_keys, cfg.near_duplicate):
            continue
        out.append(c.text)
        if len(out) == cfg.neighbour_negatives:
            break
    return out


def tree_files(repo: str | Path, rev: str) -> list[str]:
    """Paths of the files of ``rev``'s tree (nothing is checked out)."""
    from codesift.data.commits import git

    return [p for p in git(repo, "ls-tree", "-r", "-z", "--name-only", rev).split("\0") if p]


def _tree_files(repo: Path) -> Callable[[str], list[str]]:
    return lambda rev: tree_files(repo, rev)


def changed_chunk_pairs(
    repo: str | Path, source: str | None = None, cfg: ChunkPairConfig | None = None,
    report: MineReport | None = None, counter: PieceCounter | None = None,
    make_index: Callable[[list[str]], LexicalIndex] | None = None, progress: bool = False, rev: str | None = None,
    reserved: set[str] | None = None, select: Callable[[Commit], bool] | None = None,
) -> list[Pair]:
    """Localization pairs of a repository's history (see the module docstring), exact repeats dropped.

    ``counter`` counts tokens as the index model does (None: the chunker's estimate); ``make_index`` builds
    the lexical index of lexical negatives (None: neighbours only); ``reserved`` are the ``owner/name`` of
    repositories never to mine (default: ``reserved_repositories()``, the localization benchmark's);
    ``select`` says which commits may be mined (``codesift tune`` leaves out its held-out commits)."""
    from tqdm.auto import tqdm

    cfg = cfg or ChunkPairConfig()
    report = report if report is not None else MineReport()
    repo = open_repository(repo)  # refuses SWE-bench's twelve
    refuse_reserved(repo, reserved_repositories() if reserved is None else reserved)
    source = source or _owner_name(repo)
    wanted = queried_commits(repo, cfg, report, source, rev)
    if select is not None:
        kept = [(c, q) for c, q in wanted if select(c)]
        report.drop("commit: not selected", len(wanted) - len(kept))
        wanted = kept
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    with BlobReader(repo) as blobs:
        files = FileChunks(blobs, cfg, counter, report)
        half = len(wanted) // 2  # the middle of the window, else the nearest older (then newer) commit with a parent
        middle = next((c for c, _ in wanted[half:] + wanted[:half][::-1] if c.parent), None)
        snapshot = None
        if middle is not None and make_index is not None and cfg.lexical_negatives:
            hot = {f.path for commit, _ in wanted for f in commit.files}
            snapshot = snapshot_chunks(middle.parent, files, _tree_files(repo), cfg, make_index, hot)
            report.snapshots[source] = {"rev": middle.parent, "chunks": len(snapshot.chunks)}

        def diff_of(commit: Commit, paths: list[str]) -> str:
            return commit_diff(repo, commit, paths, context=0)

        for commit, query in tqdm(wanted, desc=f"commits {source}", unit="commit", disable=not progress):
            for pair in commit_chunk_pairs(commit, query, source, cfg, files, diff_of, snapshot, report):
                key = (text_hash(pair.query), text_hash(pair.document))
                if key in seen:
                    report.drop("duplicate")
                    continue
                seen.add(key)
                pairs.append(pair)
    return pairs


def queried_commits(repo: str | Path, cfg: ChunkPairConfig, report: MineReport, source: str,
                    rev: str | None = None) -> list[tuple[Commit, str]]:
    """The commits of ``rev`` (default ``cfg.rev``), newest first, whose message makes a query, with that query
    (the others are counted in ``report`` by reason)."""
    wanted: list[tuple[Commit, str]] = []
    for commit in iter_commits(repo, rev or cfg.rev, cfg.max_commits, merges=cfg.merges):
        report.commits[source] = report.commits.get(source, 0) + 1
        query = commit_query(commit, cfg.max_query_chars)
        reason = "merge without text" if commit.merge and not query else message_skip_reason(
            commit, query, cfg.min_query_chars)
        if reason:
            report.drop(f"commit: {reason}")
        else:
            wanted.append((commit, query))
    return wanted


def _owner_name(repo: Path) -> str:
    """``owner/name`` of a ``.../owner+name/repo`` mirror, else the folder's name."""
    from codesift.data.commits import repository_full_names

    names = repository_full_names(repo)
    if names:
        resolved = repo.resolve()
        for part in (resolved.name, resolved.parent.name):  # keep the mirror folder's spelling
            if "+" in part:
                return part.replace("+", "/", 1)
        return names[0]
    resolved = repo.resolve()
    return (resolved.parent.name if resolved.name in ("repo", ".git") else resolved.name).removesuffix(".git")
