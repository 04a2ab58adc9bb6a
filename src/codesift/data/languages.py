"""Which programming language a file is written in: by file name and extension, then by shebang.

Language names are lower-case and stable (``python``, ``cpp``, ``csharp``, ``shell``, ...): the
index stores them and users filter on them. ``SUPPORTED_LANGUAGES`` are the ones that parse into
units (functions, methods, classes); other detected languages are chunked by line windows.
"""

from __future__ import annotations

import re
from pathlib import Path

# Languages parsed into units with a tree-sitter grammar (see codesift.data.units).
SUPPORTED_LANGUAGES: tuple[str, ...] = (
    "python",
    "javascript",
    "typescript",
    "tsx",
    "java",
    "c",
    "cpp",
    "csharp",
    "go",
    "rust",
    "ruby",
    "php",
    "kotlin",
    "swift",
    "scala",
    "shell",
    "sql",
    "r",
    "lua",
)

# codesift language name -> tree-sitter-language-pack grammar name, where they differ.
GRAMMAR_NAMES: dict[str, str] = {"shell": "bash"}

EXTENSIONS: dict[str, str] = {
    # parsed into units
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".h++": "cpp", ".ipp": "cpp", ".tcc": "cpp", ".inl": "cpp",
    ".cs": "csharp",
    ".go": "go",
    ".rs": "rust",
    ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby",
    ".php": "php", ".phtml": "php",
    ".kt": "kotlin", ".kts": "kotlin",
    ".swift": "swift",
    ".scala": "scala", ".sc": "scala",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".ksh": "shell",
    ".sql": "sql",
    ".r": "r",
    ".lua": "lua",
    # detected, chunked by line windows
    ".pl": "perl", ".pm": "perl",
    ".m": "objc", ".mm": "objc",
    ".hs": "haskell", ".ml": "ocaml", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang",
    ".dart": "dart", ".jl": "julia", ".zig": "zig", ".nim": "nim", ".clj": "clojure",
    ".groovy": "groovy", ".gradle": "groovy", ".vue": "vue", ".svelte": "svelte",
    ".html": "html", ".htm": "html", ".css": "css", ".scss": "scss", ".less": "less",
    ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".xml": "xml",
    ".md": "markdown", ".rst": "rst", ".proto": "protobuf", ".tf": "hcl", ".cmake": "cmake",
    ".ps1": "powershell", ".bat": "batch", ".f90": "fortran", ".f": "fortran",
}

FILENAMES: dict[str, str] = {
    "makefile": "make", "gnumakefile": "make", "dockerfile": "dockerfile", "cmakelists.txt": "cmake",
    "rakefile": "ruby", "gemfile": "ruby", "podfile": "ruby", "vagrantfile": "ruby",
    "build.gradle.kts": "kotlin", ".bashrc": "shell", ".bash_profile": "shell", ".zshrc": "shell",
    ".profile": "shell", "pkgbuild": "shell",
}

# interpreter named in a shebang -> language
INTERPRETERS: dict[str, str] = {
    "python": "python", "pypy": "python",
    "node": "javascript", "nodejs": "javascript", "deno": "typescript", "bun": "javascript",
    "ts-node": "typescript", "tsx": "typescript",
    "sh": "shell", "bash": "shell", "zsh": "shell", "ksh": "shell", "dash": "shell", "ash": "shell",
    "ruby": "ruby", "php": "php", "lua": "lua", "luajit": "lua", "rscript": "r",
    "perl": "perl", "kotlin": "kotlin", "kscript": "kotlin", "scala": "scala", "swift": "swift",
    "elixir": "elixir", "julia": "julia", "groovy": "groovy",
}

_SHEBANG = re.compile(r"^#!\s*(\S+)(?:\s+(.*))?")


def language_from_shebang(first_line: str) -> str | None:
    """The language named by a ``#!`` line (``/usr/bin/env -S python3 -u`` included), or None."""
    match = _SHEBANG.match(first_line.strip())
    if not match:
        return None
    program = Path(match.group(1)).name
    args = (match.group(2) or "").split()
    if program == "env":
        args = [a for a in args if not a.startswith("-") and "=" not in a]
        if not args:
            return None
        program = Path(args[0]).name
    program = program.lower()
    if program in INTERPRETERS:
        return INTERPRETERS[program]
    base = re.sub(r"[\d.]+$", "", program)  # python3.11 -> python
    return INTERPRETERS.get(base)


def detect_language(path: str | Path, first_line: str | None = None) -> str | None:
    """The language of ``path`` by file name and extension, else by the shebang in ``first_line``."""
    name = Path(path).name.lower()
    if name in FILENAMES:
        return FILENAMES[name]
    suffix = Path(name).suffix
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if first_line and first_line.startswith("#!"):
        return language_from_shebang(first_line)
    return None


def grammar_name(language: str) -> str:
    """The tree-sitter-language-pack grammar that parses ``language``."""
    return GRAMMAR_NAMES.get(language, language)
