"""Units from fixture files in 19 languages: names, enclosing classes, docstrings, spans; language detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from codesift.data.languages import SUPPORTED_LANGUAGES, detect_language, language_from_shebang
from codesift.data.units import extract_units, strip_doc

SAMPLES = {
"python": '''import os

class Greeter(Base):
    """Greets people politely.

    More text."""

    def greet(self, name: str) -> str:
        """Return a greeting for name."""
        return "hi " + name

@decorator
def add(a, b):
    """Add two numbers."""
    return a + b
''',
"javascript": '''// util
/** Greets people. */
class Greeter {
  /** Return a greeting for name. */
  greet(name) { return "hi " + name; }
}
/** Add two numbers. */
function add(a, b) { return a + b; }
// Multiply two numbers.
const mul = (a, b) => a * b;
export function sub(a, b) { return a - b; }
''',
"typescript": '''/** Greets people. */
export class Greeter {
  /** Return a greeting for name. */
  greet(name: string): string { return "hi " + name; }
}
/** Add two numbers. */
function add(a: number, b: number): number { return a + b; }
interface Shape { area(): number; }
''',
"java": '''package x;
/** Greets people. */
public class Greeter {
    /** Return a greeting for name. */
    @Override
    public String greet(String name) { return "hi " + name; }
    public Greeter() {}
}
interface Shape { double area(); }
''',
"c": '''#include <stdio.h>
/* Add two numbers. */
int add(int a, int b) { return a + b; }
static char *name(void) { return "x"; }
struct point { int x; };
''',
"cpp": '''/// Greets people.
class Greeter {
 public:
  /// Return a greeting for name.
  std::string greet(const std::string& name) { return "hi " + name; }
};
// Add two numbers.
int add(int a, int b) { return a + b; }
int Greeter::other() { return 1; }
namespace ns { int f() { return 0; } }
template <typename T> T id(T x) { return x; }
''',
"csharp": '''namespace N {
/// <summary>Greets people.</summary>
public class Greeter {
    /// <summary>Return a greeting for name.</summary>
    public string Greet(string name) { return "hi " + name; }
}
}
''',
"go": '''package main

// Greeter greets people.
type Greeter struct{}

// Greet returns a greeting for name.
func (g *Greeter) Greet(name string) string { return "hi " + name }

// Add adds two numbers.
func Add(a, b int) int { return a + b }
''',
"rust": '''/// Greets people.
pub struct Greeter;

impl Greeter {
    /// Return a greeting for name.
    pub fn greet(&self, name: &str) -> String { format!("hi {}", name) }
}

/// Add two numbers.
fn add(a: i32, b: i32) -> i32 { a + b }
trait Shape { fn area(&self) -> f64; }
''',
"ruby": '''# Greets people.
class Greeter
  # Return a greeting for name.
  def greet(name)
    "hi " + name
  end
end

module M
  def self.add(a, b)
    a + b
  end
end
''',
"php": '''<?php
/** Greets people. */
class Greeter {
    /** Return a greeting for name. */
    public function greet($name) { return "hi " . $name; }
}
/** Add two numbers. */
function add($a, $b) { return $a + $b; }
''',
"kotlin": '''/** Greets people. */
class Greeter {
    /** Return a greeting for name. */
    fun greet(name: String): String { return "hi " + name }
}
/** Add two numbers. */
fun add(a: Int, b: Int): Int = a + b
object Single { fun f() = 1 }
''',
"swift": '''/// Greets people.
class Greeter {
    /// Return a greeting for name.
    func greet(name: String) -> String { return "hi " + name }
}
/// Add two numbers.
func add(a: Int, b: Int) -> Int { return a + b }
struct P { func f() -> Int { return 1 } }
''',
"scala": '''/** Greets people. */
class Greeter {
  /** Return a greeting for name. */
  def greet(name: String): String = "hi " + name
}
/** Add two numbers. */
object Util { def add(a: Int, b: Int): Int = a + b }
trait T { def f(): Int }
''',
"shell": '''#!/bin/bash
# Add two numbers.
add() {
  echo $(($1 + $2))
}
function greet {
  echo "hi $1"
}
''',
"sql": '''-- Add two numbers.
CREATE FUNCTION add(a integer, b integer) RETURNS integer AS $$ SELECT a + b $$ LANGUAGE SQL;
CREATE TABLE users (id int, name text);
SELECT * FROM users;
''',
"r": '''# Add two numbers.
add <- function(a, b) {
  a + b
}
greet = function(name) paste("hi", name)
''',
"lua": '''-- Add two numbers.
function add(a, b)
  return a + b
end
local function greet(name) return "hi " .. name end
--- Multiply.
function M.mul(a, b) return a * b end
function M:meth() return 1 end
local f = function(x) return x end
''',
}

EXT = {
    "python": "py", "javascript": "js", "typescript": "ts", "java": "java", "c": "c", "cpp": "cpp",
    "csharp": "cs", "go": "go", "rust": "rs", "ruby": "rb", "php": "php", "kotlin": "kt", "swift": "swift",
    "scala": "scala", "shell": "sh", "sql": "sql", "r": "R", "lua": "lua",
}

# language -> {qualified name: (kind, enclosing, docstring or None)}
EXPECTED = {
    "python": {
        "Greeter": ("class", None, "Greets people politely.\n\nMore text."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "add": ("function", None, "Add two numbers."),
    },
    "javascript": {
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "add": ("function", None, "Add two numbers."),
        "mul": ("function", None, "Multiply two numbers."),
        "sub": ("function", None, None),
    },
    "typescript": {
        "Greeter": ("class", None, "Greets people."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "add": ("function", None, "Add two numbers."),
    },
    "java": {
        "Greeter": ("class", None, "Greets people."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "Shape.area": ("method", "Shape", None),
    },
    "c": {"add": ("function", None, "Add two numbers."), "name": ("function", None, None)},
    "cpp": {
        "Greeter": ("class", None, "Greets people."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "Greeter.other": ("method", "Greeter", None),
        "add": ("function", None, "Add two numbers."),
        "id": ("function", None, None),
    },
    "csharp": {
        "Greeter": ("class", None, "<summary>Greets people.</summary>"),
        "Greeter.Greet": ("method", "Greeter", "<summary>Return a greeting for name.</summary>"),
    },
    "go": {
        "Greeter": ("class", None, "Greeter greets people."),
        "Greeter.Greet": ("method", "Greeter", "Greet returns a greeting for name."),
        "Add": ("function", None, "Add adds two numbers."),
    },
    "rust": {
        "Greeter": ("class", None, "Greets people."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "add": ("function", None, "Add two numbers."),
    },
    "ruby": {
        "Greeter": ("class", None, "Greets people."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "M.add": ("method", "M", None),
    },
    "php": {
        "Greeter": ("class", None, "Greets people."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "add": ("function", None, "Add two numbers."),
    },
    "kotlin": {
        "Greeter": ("class", None, "Greets people."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "add": ("function", None, "Add two numbers."),
    },
    "swift": {
        "Greeter": ("class", None, "Greets people."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "add": ("function", None, "Add two numbers."),
        "P.f": ("method", "P", None),
    },
    "scala": {
        "Greeter": ("class", None, "Greets people."),
        "Greeter.greet": ("method", "Greeter", "Return a greeting for name."),
        "Util.add": ("method", "Util", None),
    },
    "shell": {"add": ("function", None, "Add two numbers."), "greet": ("function", None, None)},
    "sql": {"add": ("function", None, "Add two numbers.")},
    "r": {"add": ("function", None, "Add two numbers."), "greet": ("function", None, None)},
    "lua": {
        "add": ("function", None, "Add two numbers."),
        "greet": ("function", None, None),
        "M.mul": ("method", "M", "Multiply."),
        "M.meth": ("method", "M", None),
    },
}


def write_fixtures(folder: Path) -> dict[str, Path]:
    """Write every sample as a file with its usual extension; returns language -> path."""
    paths = {}
    for language, text in SAMPLES.items():
        path = folder / f"sample_{language}.{EXT[language]}"
        path.write_text(text, encoding="utf-8")
        paths[language] = path
    return paths


def test_at_least_15_languages_parse_into_units():
    assert set(EXPECTED) <= set(SUPPORTED_LANGUAGES)
    parsed = [lang for lang in SAMPLES if extract_units(SAMPLES[lang], lang)]
    assert len(parsed) >= 15, parsed


@pytest.mark.parametrize("language", sorted(EXPECTED))
def test_units_names_enclosing_and_docstrings(language, tmp_path):
    path = write_fixtures(tmp_path)[language]
    text = path.read_text()
    assert detect_language(path) == language
    units = {u.qualified_name: u for u in extract_units(text, language)}
    for name, (kind, enclosing, doc) in EXPECTED[language].items():
        assert name in units, f"{language}: {name} missing from {sorted(units)}"
        unit = units[name]
        assert (unit.kind, unit.enclosing, unit.docstring) == (kind, enclosing, doc), name
        # spans agree with the text: bytes, lines and the unit's own text
        data = text.encode()
        assert data[unit.start_byte:unit.end_byte].decode() == unit.text
        lines = text.split("\n")
        assert unit.text.split("\n")[0] in lines[unit.start_line - 1]
        assert unit.text.rstrip().split("\n")[-1] in lines[unit.end_line - 1]
        assert unit.signature and "\n" not in unit.signature
        if unit.doc_start_byte is not None:
            assert unit.doc_end_byte is not None and unit.doc_start_byte < unit.doc_end_byte
            assert doc is None or doc.split()[-1].strip("<>/.") in data[unit.doc_start_byte:unit.doc_end_byte].decode()


def test_python_docstring_is_stripped_from_code():
    units = {u.qualified_name: u for u in extract_units(SAMPLES["python"], "python")}
    code = strip_doc(units["Greeter.greet"])
    assert "Return a greeting" not in code
    assert code.startswith("def greet(self, name: str) -> str:") and 'return "hi " + name' in code
    # a comment-style doc sits outside the unit: the code is the unit unchanged
    go = {u.qualified_name: u for u in extract_units(SAMPLES["go"], "go")}
    assert strip_doc(go["Add"]) == go["Add"].text and "//" not in go["Add"].text


def test_signature_stops_at_the_body():
    units = {u.qualified_name: u for u in extract_units(SAMPLES["python"], "python")}
    assert units["Greeter.greet"].signature == "def greet(self, name: str) -> str"
    rust = {u.qualified_name: u for u in extract_units(SAMPLES["rust"], "rust")}
    assert rust["add"].signature == "fn add(a: i32, b: i32) -> i32"


def test_trailing_comment_and_blank_line_are_not_docs():
    src = "int x = 1; // counter\nint f(void) { return x; }\n\n/* far away */\n\nint g(void) { return 2; }\n"
    units = {u.name: u for u in extract_units(src, "c")}
    assert units["f"].docstring is None
    assert units["g"].docstring is None


def test_unsupported_language_gives_no_units():
    assert extract_units("whatever", "markdown") == []


@pytest.mark.parametrize(
    ("path", "first_line", "expected"),
    [
        ("a/b/main.py", None, "python"),
        ("x.TSX", None, "tsx"),
        ("lib.hpp", None, "cpp"),
        ("Program.cs", None, "csharp"),
        ("analysis.R", None, "r"),
        ("Makefile", None, "make"),
        ("README", None, None),
        ("tool", "#!/usr/bin/env python3", "python"),
        ("tool", "#!/usr/bin/python3.11 -u", "python"),
        ("run", "#!/bin/bash", "shell"),
        ("run", "#!/usr/bin/env -S node --no-warnings", "javascript"),
        ("script", "#!/usr/bin/env ruby", "ruby"),
        ("script", "#!/usr/bin/env Rscript", "r"),
        ("script", "#!/usr/bin/env unknown-thing", None),
        ("script", "# not a shebang", None),
        ("x.rs", "#!/bin/bash", "rust"),  # the extension wins over a shebang
    ],
)
def test_detect_language(path, first_line, expected):
    assert detect_language(path, first_line) == expected


def test_shebang_helper_ignores_env_assignments():
    assert language_from_shebang("#!/usr/bin/env FOO=1 python3") == "python"
    assert language_from_shebang("#!/usr/bin/env") is None


def test_rust_doc_comment_above_attributes():
    from codesift.data.units import extract_units

    src = "/// Adds two numbers.\n#[inline]\n#[must_use]\npub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n"
    (unit,) = [u for u in extract_units(src, "rust") if u.name == "add"]
    assert unit.docstring == "Adds two numbers."
