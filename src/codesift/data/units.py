"""Code units (functions, methods, classes) from tree-sitter parse trees, in 19 languages.

One table (``SPECS``) says, per language, which node types are functions and which are classes;
one walk turns a parse tree into ``CodeUnit`` objects with name, enclosing class, signature,
docstring (Python string or leading doc comment) and byte/line spans. Grammars come from
tree-sitter-language-pack 0.13, which ships them inside its wheel (no download at run time).
"""

from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from codesift.data.languages import SUPPORTED_LANGUAGES, grammar_name

logger = logging.getLogger(__name__)


@dataclass
class CodeUnit:
    """A function, method or class found in a source file (lines 1-based, inclusive; bytes UTF-8)."""

    name: str
    kind: str  # 'function' | 'method' | 'class'
    enclosing: str | None
    signature: str
    docstring: str | None
    language: str
    start_byte: int
    end_byte: int
    start_line: int
    end_line: int
    text: str
    doc_start_byte: int | None = None
    doc_end_byte: int | None = None
    # 1-based lines where the top-level statements of the body start (for splitting at statements)
    statement_lines: tuple[int, ...] = ()
    has_error: bool = False  # the unit's subtree contains a syntax error
    depth: int = 0  # how many units enclose this one

    @property
    def qualified_name(self) -> str:
        """``Class.method`` for methods, the plain name otherwise."""
        return f"{self.enclosing}.{self.name}" if self.enclosing and self.kind == "method" else self.name

    @property
    def doc_inside(self) -> bool:
        """True when the docstring lies inside the unit's span (Python), False for leading comments."""
        return self.doc_start_byte is not None and self.doc_start_byte >= self.start_byte


@dataclass(frozen=True)
class LanguageSpec:
    """Which node types of one grammar are functions, classes and wrappers, and how docs are written."""

    functions: frozenset[str]
    classes: frozenset[str] = frozenset()
    # containers that give methods an enclosing name but are no unit themselves (Rust impl)
    scopes: frozenset[str] = frozenset()
    # nodes that wrap a definition and belong to it (decorators, export, template<>)
    wrappers: frozenset[str] = frozenset()
    comments: frozenset[str] = frozenset({"comment"})
    python_docstrings: bool = False
    # `name = function(...)` style: (assignment node type, name field, value field, function node types)
    assignments: tuple[tuple[str, str, str, frozenset[str]], ...] = ()


def _fs(*names: str) -> frozenset[str]:
    return frozenset(names)


_JS_FUNCS = _fs("function_declaration", "generator_function_declaration", "method_definition")
_JS_ASSIGN = (("variable_declarator", "name", "value", _fs("arrow_function", "function_expression", "function")),)
_TS_CLASSES = _fs("class_declaration", "abstract_class_declaration", "interface_declaration", "class")

SPECS: dict[str, LanguageSpec] = {
    "python": LanguageSpec(
        _fs("function_definition"), _fs("class_definition"), wrappers=_fs("decorated_definition"),
        python_docstrings=True,
    ),
    "javascript": LanguageSpec(
        _JS_FUNCS, _fs("class_declaration", "class"), wrappers=_fs("export_statement"), assignments=_JS_ASSIGN,
    ),
    "typescript": LanguageSpec(
        _JS_FUNCS, _TS_CLASSES, wrappers=_fs("export_statement"), assignments=_JS_ASSIGN,
    ),
    "tsx": LanguageSpec(_JS_FUNCS, _TS_CLASSES, wrappers=_fs("export_statement"), assignments=_JS_ASSIGN),
    "java": LanguageSpec(
        _fs("method_declaration", "constructor_declaration"),
        _fs("class_declaration", "interface_declaration", "enum_declaration", "record_declaration",
            "annotation_type_declaration"),
        comments=_fs("block_comment", "line_comment"),
    ),
    "c": LanguageSpec(_fs("function_definition")),
    "cpp": LanguageSpec(
        _fs("function_definition"), _fs("class_specifier", "struct_specifier"), wrappers=_fs("template_declaration"),
    ),
    "csharp": LanguageSpec(
        _fs("method_declaration", "constructor_declaration", "local_function_statement", "operator_declaration"),
        _fs("class_declaration", "struct_declaration", "interface_declaration", "record_declaration"),
    ),
    "go": LanguageSpec(_fs("function_declaration", "method_declaration"), _fs("type_declaration")),
    "rust": LanguageSpec(
        _fs("function_item"), _fs("struct_item", "enum_item", "trait_item", "union_item"), scopes=_fs("impl_item"),
        comments=_fs("line_comment", "block_comment"),
    ),
    "ruby": LanguageSpec(_fs("method", "singleton_method"), _fs("class", "module")),
    "php": LanguageSpec(
        _fs("function_definition", "method_declaration"),
        _fs("class_declaration", "interface_declaration", "trait_declaration", "enum_declaration"),
    ),
    "kotlin": LanguageSpec(
        _fs("function_declaration"), _fs("class_declaration", "object_declaration"),
        comments=_fs("multiline_comment", "line_comment", "comment"),
    ),
    "swift": LanguageSpec(
        _fs("function_declaration", "init_declaration"), _fs("class_declaration", "protocol_declaration"),
        comments=_fs("comment", "multiline_comment"),
    ),
    "scala": LanguageSpec(
        _fs("function_definition"), _fs("class_definition", "object_definition", "trait_definition"),
        comments=_fs("block_comment", "comment"),
    ),
    "shell": LanguageSpec(_fs("function_definition")),
    "sql": LanguageSpec(_fs("create_function", "create_procedure"), wrappers=_fs("statement")),
    "r": LanguageSpec(
        frozenset(), assignments=(("binary_operator", "lhs", "rhs", _fs("function_definition")),),
    ),
    "lua": LanguageSpec(_fs("function_declaration"), comments=_fs("comment")),
}

assert set(SPECS) == set(SUPPORTED_LANGUAGES)  # one spec per supported language

_NAME_TYPES = _fs(
    "identifier", "type_identifier", "field_identifier", "simple_identifier", "constant", "name", "word",
    "property_identifier", "private_property_identifier", "namespace_identifier", "package_identifier",
)
_NEEDS_BODY = _fs("struct_specifier", "class_specifier", "class")  # else a mere use: `struct point p;`
_BODY_FIELDS = ("body", "block", "value")
_BODY_TYPES = _fs(
    "block", "compound_statement", "statement_block", "function_body", "class_body", "declaration_list",
    "field_declaration_list", "body_statement", "template_body", "braced_expression", "constructor_body",
    "enum_body", "interface_body", "do_group",
)


@cache
def get_parser(language: str) -> Any:
    """A cached tree-sitter parser for ``language`` (a name from SUPPORTED_LANGUAGES)."""
    if language not in SPECS:
        raise ValueError(f"no grammar for language {language!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}")
    from tree_sitter_language_pack import get_parser as _get_parser

    return _get_parser(grammar_name(language))  # type: ignore[arg-type]


def parse(text: str, language: str) -> tuple[Any, bytes]:
    """Parse ``text``: returns the tree-sitter tree and the UTF-8 bytes its offsets refer to."""
    data = text.encode("utf-8", errors="surrogatepass")
    return get_parser(language).parse(data), data


def _node_text(node: Any, data: bytes) -> str:
    return data[node.start_byte:node.end_byte].decode("utf-8", errors="replace")


def _first_name(node: Any, data: bytes, depth: int = 0) -> str | None:
    """The defined name: the `name` field, the C declarator chain, or the first identifier child."""
    name = node.child_by_field_name("name")
    if name is not None:
        if name.type in ("dot_index_expression", "method_index_expression"):  # Lua: M.f / M:f
            last = name.child_by_field_name("field") or name.child_by_field_name("method")
            return _node_text(last, data) if last is not None else _node_text(name, data)
        if name.type == "object_reference":  # SQL
            inner = name.child_by_field_name("name")
            return _node_text(inner or name, data)
        return _node_text(name, data)
    declarator = node.child_by_field_name("declarator")
    if declarator is not None and depth < 8:
        if declarator.type in ("qualified_identifier", "destructor_name", "operator_name") or declarator.type in _NAME_TYPES:
            text = _node_text(declarator, data)
            return text.rsplit("::", 1)[-1]
        return _first_name(declarator, data, depth + 1)
    if node.type == "type_declaration":  # Go: type X struct {...}
        for child in node.named_children:
            if child.type in ("type_spec", "type_alias"):
                return _first_name(child, data, depth + 1)
    if node.type == "impl_item":
        target = node.child_by_field_name("type")
        return _node_text(target, data) if target is not None else None
    for child in node.named_children:
        if child.type in _NAME_TYPES:
            return _node_text(child, data)
        if child.type == "object_reference":
            return _first_name(child, data, depth + 1) or _node_text(child, data)
    return None


def _qualifier(node: Any, data: bytes) -> str | None:
    """An owner written into the definition itself: C++ ``A::f``, Go receivers, Lua ``M.f`` / ``M:f``."""
    if node.type == "method_declaration" and node.child_by_field_name("receiver") is not None:  # Go
        receiver = node.child_by_field_name("receiver")
        types = [n for n in _descendants(receiver) if n.type == "type_identifier"]
        return _node_text(types[0], data) if types else None
    name = node.child_by_field_name("name")
    if name is not None and name.type in ("dot_index_expression", "method_index_expression"):
        table = name.child_by_field_name("table")
        return _node_text(table, data) if table is not None else None
    declarator = node.child_by_field_name("declarator")
    while declarator is not None:
        if declarator.type == "qualified_identifier":
            scope = declarator.child_by_field_name("scope")
            return _node_text(scope, data) if scope is not None else None
        declarator = declarator.child_by_field_name("declarator")
    return None


def _descendants(node: Any) -> list[Any]:
    out, stack = [], [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(reversed(current.named_children))
    return out


def _body(node: Any) -> Any | None:
    for name in _BODY_FIELDS:
        body = node.child_by_field_name(name)
        if body is not None and (name != "value" or body.type in _BODY_TYPES):
            return body
    for child in node.named_children:
        if child.type in _BODY_TYPES:
            return child
    return None


def _signature(node: Any, data: bytes, body: Any | None) -> str:
    """The text from the start of the definition to its body (or its first line), whitespace collapsed."""
    end = body.start_byte if body is not None and body.start_byte > node.start_byte else node.end_byte
    for child in node.children:  # a comment between the header and the body is not signature
        if child.start_byte >= end:
            break
        if "comment" in child.type and child.start_byte > node.start_byte:
            end = child.start_byte
            break
    text = data[node.start_byte:end].decode("utf-8", errors="replace")
    if body is None:
        text = text.split("\n", 1)[0]
    text = " ".join(text.split()).rstrip(" {:=")
    return text[:400]


def _statement_lines(body: Any | None) -> tuple[int, ...]:
    """Start lines of the body's statements, descending through single-child wrappers."""
    if body is None:
        return ()
    node = body
    for _ in range(4):
        named = [c for c in node.named_children if "comment" not in c.type]
        if len(named) == 1 and named[0].named_child_count > 1 and named[0].type in (
            "statement_list", "statements", "body_statement", "block", "compound_statement",
        ):
            node = named[0]
        else:
            break
    return tuple(sorted({c.start_point[0] + 1 for c in node.named_children if "comment" not in c.type}))


_COMMENT_PREFIX = re.compile(r"^\s*(///?!?|//|/\*\*?!?|\*/|\*|#'|#!?|--+|;+)\s?")


def clean_comment(raw: str) -> str:
    """The prose of a doc comment: comment markers (``/** */ /// # --``) removed, indentation dedented."""
    raw = re.sub(r"\*+/\s*$", "", raw.strip())
    lines = [_COMMENT_PREFIX.sub("", line, count=1) for line in raw.splitlines()]
    return inspect.cleandoc("\n".join(lines)).strip()


def _python_docstring(body: Any | None, data: bytes) -> tuple[str, int, int] | None:
    if body is None:
        return None
    first = next((c for c in body.named_children if c.type != "comment"), None)
    if first is None:
        return None
    string = first  # newer grammars put the docstring in the block directly
    if first.type == "expression_statement":
        if first.named_child_count != 1:
            return None
        string = first.named_children[0]
    if string.type not in ("string", "concatenated_string"):
        return None
    raw = _node_text(string, data)
    match = re.match(r"^[rRuUbBfF]{0,2}('''|\"\"\"|'|\")(.*)\1$", raw, re.DOTALL)
    if not match:
        return None
    return inspect.cleandoc(match.group(2)).strip(), first.start_byte, first.end_byte


_ATTRIBUTE_TYPES = frozenset({"attribute_item"})


def _leading_comments(node: Any, spec: LanguageSpec, data: bytes) -> tuple[str, int, int] | None:
    """The block of comments right above ``node`` (no blank line between, not trailing code)."""
    anchor = node
    prev = anchor.prev_named_sibling
    # a first member's doc comment may sit before its container (Ruby: comment, then body_statement)
    while prev is None and anchor.parent is not None and anchor.parent.type in _BODY_TYPES:
        anchor = anchor.parent
        prev = anchor.prev_named_sibling
    comments: list[Any] = []
    line = node.start_point[0]
    # attributes between the doc comment and the item (Rust `#[inline]`) belong to the item
    while prev is not None and prev.type in _ATTRIBUTE_TYPES and prev.end_point[0] >= line - 1:
        line = prev.start_point[0]
        prev = prev.prev_named_sibling
    while prev is not None and prev.type in spec.comments and prev.end_point[0] >= line - 1:
        before = prev.prev_sibling
        if (
            before is not None
            and before.type not in spec.comments
            and b"\n" not in data[before.end_byte - 1:prev.start_byte]
        ):
            break  # a trailing comment of the previous statement (same line)
        if not _node_text(prev, data).startswith("#!"):  # a shebang is no documentation
            comments.append(prev)
        line = prev.start_point[0]
        prev = prev.prev_named_sibling
    if not comments:
        return None
    comments.reverse()
    start, end = comments[0].start_byte, comments[-1].end_byte
    raw = data[start:end].decode("utf-8", errors="replace")
    text = clean_comment(raw)
    return (text, start, end) if text else None


def extract_units(text: str, language: str, tree: Any | None = None) -> list[CodeUnit]:
    """Functions, methods and classes of ``text`` in source order (empty for unsupported languages)."""
    spec = SPECS.get(language)
    if spec is None:
        return []
    if tree is None:
        tree, data = parse(text, language)
    else:  # a tree the caller parsed from this same text
        data = text.encode("utf-8", errors="surrogatepass")
    units: list[CodeUnit] = []

    def visit(node: Any, enclosing: str | None, depth: int) -> None:
        for child in node.named_children:
            unit_node, name_node_owner, kind, definition = None, None, None, child
            if child.type in spec.functions:
                unit_node = name_node_owner = child
                kind = "function"
            elif child.type in spec.classes and (_body(child) is not None or child.type not in _NEEDS_BODY):
                unit_node = name_node_owner = child
                kind = "class"
            else:
                for atype, name_field, value_field, func_types in spec.assignments:
                    if child.type == atype:
                        value = child.child_by_field_name(value_field)
                        target = child.child_by_field_name(name_field)
                        if value is not None and value.type in func_types and target is not None:
                            unit_node, name_node_owner, kind, definition = child, target, "function", value
                            break
            if unit_node is None:
                scope_name = enclosing
                if child.type in spec.scopes:
                    scope_name = _first_name(child, data) or enclosing
                visit(child, scope_name, depth)
                continue
            name = _first_name(unit_node, data) if name_node_owner is unit_node else _node_text(name_node_owner, data)
            if not name:
                visit(child, enclosing, depth)
                continue
            owner = _qualifier(unit_node, data) if kind == "function" else None
            unit_enclosing = owner or enclosing
            if kind == "function" and unit_enclosing is not None:
                kind = "method"
            units.append(_make_unit(unit_node, definition, name, kind, unit_enclosing, spec, language, data, depth))
            visit(child, name if kind == "class" else None, depth + 1)

    visit(tree.root_node, None, 0)
    units.sort(key=lambda u: (u.start_byte, -u.end_byte))
    return units


def _make_unit(
    node: Any,
    definition: Any,
    name: str,
    kind: str,
    enclosing: str | None,
    spec: LanguageSpec,
    language: str,
    data: bytes,
    depth: int,
) -> CodeUnit:
    """Build the unit of ``node`` (``definition`` is the function node itself, or the assigned value)."""
    span = node
    # a JS `const f = () => ...` unit spans its whole declaration statement
    if node.type == "variable_declarator" and node.parent is not None and node.parent.named_child_count == 1:
        span = node.parent
    while span.parent is not None and span.parent.type in spec.wrappers:
        span = span.parent
    body = _body(definition)
    doc = _python_docstring(body, data) if spec.python_docstrings else _leading_comments(span, spec, data)
    start_line = span.start_point[0] + 1
    end_line = span.end_point[0] + 1
    if span.end_point[1] == 0 and end_line > start_line:
        end_line -= 1
    return CodeUnit(
        name=name,
        kind=kind,
        enclosing=enclosing,
        signature=_signature(span, data, body),
        docstring=doc[0] if doc else None,
        language=language,
        start_byte=span.start_byte,
        end_byte=span.end_byte,
        start_line=start_line,
        end_line=end_line,
        text=_node_text(span, data),
        doc_start_byte=doc[1] if doc else None,
        doc_end_byte=doc[2] if doc else None,
        statement_lines=_statement_lines(body),
        has_error=span.has_error,
        depth=depth,
    )


def strip_doc(unit: CodeUnit) -> str:
    """The unit's code without its docstring (Python docstrings are cut out with their line)."""
    if not unit.doc_inside or unit.doc_start_byte is None or unit.doc_end_byte is None:
        return unit.text
    data = unit.text.encode("utf-8", errors="surrogatepass")
    start = unit.doc_start_byte - unit.start_byte
    end = unit.doc_end_byte - unit.start_byte
    line_start = data.rfind(b"\n", 0, start) + 1
    if not data[line_start:start].strip():
        start = line_start
    line_end = data.find(b"\n", end)
    if line_end != -1 and not data[end:line_end].strip():
        end = line_end + 1
    return (data[:start] + data[end:]).decode("utf-8", errors="replace")
