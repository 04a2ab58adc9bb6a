"""The one walk over a source tree, for mining and for the index: the way git would, with nested .gitignore,
.ignore and .codesiftignore files, and the folders that never hold source (``data.files.SKIP_DIRS``) left out."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pathspec

from codesift.data.files import SKIP_DIRS
from codesift.model.inputs import printable, text_problem

log = logging.getLogger(__name__)

IGNORE_FILES = (".gitignore", ".ignore", ".codesiftignore")
# Always skipped (gitignore syntax); a `!pattern` in a project's .codesiftignore re-includes one.
DEFAULT_EXCLUDES = tuple(f"{d}/" for d in sorted(SKIP_DIRS))


@dataclass(frozen=True)
class FileStat:
    """One file found by the walk: its path relative to the root (posix), mtime in ns and size."""

    path: str
    mtime_ns: int
    size: int


class _Rules:
    """The ignore specs in force inside one directory: (base dir relative to root, spec), outermost first."""

    def __init__(self, stack: tuple[tuple[str, pathspec.PathSpec], ...]) -> None:
        self.stack = stack

    def ignored(self, rel: str, is_dir: bool) -> bool:
        decision = False
        for base, spec in self.stack:
            sub = rel[len(base) + 1:] if base else rel
            if is_dir:
                sub += "/"
            result = spec.check_file(sub)
            if is_dir and result.include and _contents_only(spec, result.index):
                continue  # `logs/**` ignores what is in logs/, not logs/ itself: git enters it (`!logs/l.py`)
            if result.include is not None:  # the deepest file with a matching rule decides, as in git
                decision = result.include
        return decision


def _contents_only(spec: pathspec.PathSpec, index: int | None) -> bool:
    """Whether the rule at ``index`` of ``spec`` is ``DIR/**``: it matches what a folder holds, not the folder."""
    if index is None:
        return False
    pattern = getattr(spec.patterns[index], "pattern", None)
    return isinstance(pattern, str) and pattern.rstrip().endswith("/**")


def _skip(skipped: list[tuple[str, str]] | None, rel: str, reason: str) -> None:
    log.warning("skipped %s: %s", printable(rel), reason)
    if skipped is not None:
        skipped.append((printable(rel), reason))


def _load_spec(directory: Path, names: tuple[str, ...]) -> pathspec.PathSpec | None:
    lines: list[str] = []
    for name in names:
        try:
            lines += (directory / name).read_text(encoding="utf-8", errors="replace").splitlines()
        except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
            continue
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def walk_files(root: str | Path, extra_excludes: tuple[str, ...] = (),
               skipped: list[tuple[str, str]] | None = None, follow_symlinks: bool = False) -> Iterator[FileStat]:
    """Yield every regular file under ``root`` that no ignore rule excludes, in a stable order.

    Rules come from the built-in excludes, ``extra_excludes`` and each directory's .gitignore,
    .ignore and .codesiftignore (later files and deeper directories win). Symlinks are left out (git
    stores them as links, not as the files they name); ``follow_symlinks`` follows them, entering each
    directory once, so a link loop ends. A file or directory whose name is not valid UTF-8 cannot be
    stored or shown: it is left out, and (path with the bad bytes escaped, reason) is added to ``skipped``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; pass the root of a source tree")
    seen: set[tuple[int, int]] = set()  # directories entered, when links are followed
    base_spec = pathspec.GitIgnoreSpec.from_lines([*DEFAULT_EXCLUDES, *extra_excludes])
    top = _load_spec(root, IGNORE_FILES)
    stack: tuple[tuple[str, pathspec.PathSpec], ...] = (("", base_spec),) + ((("", top),) if top else ())
    pending: list[tuple[str, _Rules]] = [("", _Rules(stack))]
    while pending:
        rel_dir, rules = pending.pop()
        abs_dir = root / rel_dir if rel_dir else root
        try:
            if follow_symlinks:
                st = abs_dir.stat()
                if (st.st_dev, st.st_ino) in seen:  # reached again through a link: a loop or a duplicate
                    continue
                seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(abs_dir), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone since it was listed
        except OSError as exc:  # unreadable, or a path past PATH_MAX: left out, with a word
            why = "path too long" if exc.errno == errno.ENAMETOOLONG else exc.strerror or type(exc).__name__
            _skip(skipped, rel_dir or ".", f"directory not read ({why})")
            continue
        subdirs: list[tuple[str, _Rules]] = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            problem = text_problem(entry.name)
            if problem is not None:
                kind = "directory" if entry.is_dir(follow_symlinks=False) else "file"
                log.warning("skipped %s: its name is not valid UTF-8 (%s)", printable(rel), problem)
                if skipped is not None:
                    skipped.append((printable(rel), f"{kind} name is not valid UTF-8 ({problem})"))
                continue
            try:
                if entry.is_symlink() and not follow_symlinks:
                    continue
                if entry.is_dir():
                    if rules.ignored(rel, True):
                        continue
                    spec = _load_spec(Path(entry.path), IGNORE_FILES)
                    sub_rules = _Rules(rules.stack + ((rel, spec),)) if spec else rules
                    subdirs.append((rel, sub_rules))
                elif entry.is_file():
                    if rules.ignored(rel, False):
                        continue
                    st = entry.stat()
                    yield FileStat(rel, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                continue  # gone since it was listed
            except OSError as exc:
                why = "path too long" if exc.errno == errno.ENAMETOOLONG else exc.strerror or type(exc).__name__
                _skip(skipped, rel, f"not read ({why})")
        pending.extend(reversed(subdirs))
