"""Read the import statements of a source file with tree-sitter's official grammars."""

from __future__ import annotations

import functools
import importlib
import re
import threading
from collections.abc import Callable, Iterator

import tree_sitter as ts

from neo_ray.errors import ParseError
from neo_ray.models import Import, Language
from neo_ray.pipeline.scan import reference_directives, scan_imports

# Grammar name → (official wheel, function returning its language capsule).
_GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "java": ("tree_sitter_java", "language"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
}


# One query per grammar; each capture names the import form it found.
_JS_QUERY = """
(import_statement source: (string (string_fragment) @import))
(export_statement source: (string (string_fragment) @export))
(call_expression
  function: (identifier) @_fn
  arguments: (arguments . (string (string_fragment) @require))
  (#eq? @_fn "require"))
(call_expression
  function: (import)
  arguments: (arguments . (string (string_fragment) @dynamic)))
"""
_QUERIES: dict[str, str] = {
    "javascript": _JS_QUERY,
    "typescript": _JS_QUERY + "(import_require_clause source: (string (string_fragment) @import))",
    "java": "(import_declaration) @import",
    "go": "(import_spec path: (_) @import)",
    "rust": "(mod_item) @mod (use_declaration) @use (extern_crate_declaration) @extern_crate",
}
_QUERIES["tsx"] = _QUERIES["typescript"]


@functools.cache
def _language(name: str) -> ts.Language:
    """A grammar, its wheel imported only when first asked for."""
    module, function = _GRAMMARS[name]
    return ts.Language(getattr(importlib.import_module(module), function)())


@functools.cache
def _query(name: str) -> ts.Query:
    return ts.Query(_language(name), _QUERIES[name])


# A Parser holds parse state: one per thread, made once and reused.
_local = threading.local()


def _parser(name: str) -> ts.Parser:
    parsers: dict[str, ts.Parser] | None = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    parser = parsers.get(name)
    if parser is None:
        parser = parsers[name] = ts.Parser(_language(name))
    return parser


def grammar_name(language: Language, path: str = "") -> str:
    """The grammar that reads a file: TypeScript files ending in .tsx need the TSX grammar."""
    if language is Language.TYPESCRIPT and path.endswith(".tsx"):
        return "tsx"
    return language.value


def parse_imports(
    source: bytes, language: Language, path: str = "", *, strict: bool = True
) -> list[Import]:
    """Every import a file writes, in source order.

    strict: a full parse; a syntax error anywhere in the file raises ParseError. Not strict:
    a lexical scan reads the imports where it is sure to read what the full parse would
    (see `neo_ray.pipeline.scan`), tree-sitter parses the rest, and a file with syntax
    errors gives the imports that can be read.
    """
    if not strict:
        scanned = scan_imports(source, language)
        if scanned is not None:
            return scanned
    name = grammar_name(language, path)
    if language is Language.TYPESCRIPT and b"export type" in source:
        source = _EXPORT_TYPE_STAR.sub(rb"export\1    \2", source)
    root = _parser(name).parse(source).root_node
    if strict and root.has_error:
        raise ParseError(f"syntax error at line {error_line(root)}")
    if language is Language.PYTHON:
        return _python_tree_imports(source, root)
    captures = ts.QueryCursor(_query(name)).captures(root)
    found = [
        (node.start_byte, imp)
        for kind, nodes in captures.items()
        if not kind.startswith("_")
        for node in nodes
        for imp in _EXTRACT[language](node, kind)
    ]
    if language in (Language.JAVASCRIPT, Language.TYPESCRIPT):
        found += reference_directives(source)
    found.sort(key=lambda pair: pair[0])
    return [imp for _, imp in found]


# tree-sitter-typescript 0.23 predates TypeScript 5.0's `export type * from "x"`: read it as
# `export * from "x"` (the same dependency), the word blanked in place so lines stay true.
_EXPORT_TYPE_STAR = re.compile(rb"\bexport(\s+)type(\s+\*)")


def error_line(root: ts.Node) -> int:
    """1-based line of the first ERROR or MISSING node under a tree that has an error."""
    node = root
    while True:
        for child in node.children:
            if child.is_error or child.is_missing:
                return child.start_point.row + 1
            if child.has_error:
                node = child
                break
        else:
            return node.start_point.row + 1


def _text(node: ts.Node | None) -> str:
    return "" if node is None or node.text is None else node.text.decode("utf-8", "replace")


# --- Python ------------------------------------------------------------------------------

_PY_STATEMENTS = {"import_statement": "import", "import_from_statement": "from"}


def _python_tree_imports(source: bytes, root: ts.Node) -> list[Import]:
    """The import statements of a parsed Python file.

    Every import statement holds the keyword `import`, so the tree is entered only where
    the bytes hold that word: much faster than a query walking every node, and exact.
    """
    found: list[Import] = []
    seen: set[int] = set()
    at = source.find(b"import")
    while at >= 0:
        keyword = root.descendant_for_byte_range(at, at + 6)
        statement = keyword.parent if keyword is not None and keyword.type == "import" else None
        kind = _PY_STATEMENTS.get(statement.type) if statement is not None else None
        if statement is not None and kind is not None and statement.start_byte not in seen:
            seen.add(statement.start_byte)
            found.extend(_python(statement, kind))
        at = source.find(b"import", at + 6)
    return found


def _python(node: ts.Node, kind: str) -> Iterator[Import]:
    if kind == "import":
        for name in node.children_by_field_name("name"):
            yield Import(_imported_name(name), kind="import")
        return
    module = node.child_by_field_name("module_name")
    level, dotted = 0, module
    if module is not None and module.type == "relative_import":
        prefix = module.named_children[0]
        level = _text(prefix).count(".")
        dotted = module.named_children[1] if module.named_child_count > 1 else None
    names = tuple(_imported_name(n) for n in node.children_by_field_name("name"))
    yield Import(_text(dotted), level=level, names=names, kind="from")


def _imported_name(node: ts.Node) -> str:
    """`a.b` from `a.b` or from `a.b as c`."""
    if node.type == "aliased_import":
        return _text(node.child_by_field_name("name"))
    return _text(node)


# --- JavaScript and TypeScript -----------------------------------------------------------


def _javascript(node: ts.Node, kind: str) -> Iterator[Import]:
    yield Import(_text(node), kind=kind)


# --- Java --------------------------------------------------------------------------------


def _java(node: ts.Node, kind: str) -> Iterator[Import]:
    static = any(child.type == "static" for child in node.children)
    wildcard = any(child.type == "asterisk" for child in node.children)
    path = next((c for c in node.named_children if c.type != "asterisk"), None)
    module = "".join(_text(path).split())
    yield Import(
        module,
        names=("*",) if wildcard else (),
        kind="static" if static else "import",
    )


# --- Go ----------------------------------------------------------------------------------


def _go(node: ts.Node, kind: str) -> Iterator[Import]:
    # Interpreted ("a/b") and raw (`a/b`) string literals: drop the delimiters.
    yield Import(_text(node)[1:-1], kind=kind)


# --- Rust --------------------------------------------------------------------------------


def _rust(node: ts.Node, kind: str) -> Iterator[Import]:
    inline = _inline_modules(node)
    if kind == "mod":
        if node.child_by_field_name("body") is not None:
            return  # an inline module: its items are in this file
        name = _text(node.child_by_field_name("name"))
        path_attr = _path_attribute(node)
        if path_attr is not None and not inline:
            yield Import(path_attr, names=(name,), kind="mod_path")
        else:
            yield Import("::".join([*inline, name]), kind="mod")
    elif kind == "extern_crate":
        yield Import(_text(node.child_by_field_name("name")), kind="extern_crate")
    else:
        argument = node.child_by_field_name("argument")
        if argument is not None:
            for segments in _use_paths(argument, []):
                yield _rust_use(_file_relative(segments, inline))


def _rust_use(segments: list[str]) -> Import:
    if segments and segments[-1] == "*":
        return Import("::".join(segments[:-1]), names=("*",), kind="use")
    return Import("::".join(segments), kind="use")


def _inline_modules(node: ts.Node) -> list[str]:
    """Names of the inline `mod x { ... }` blocks around a node, outermost first."""
    names: list[str] = []
    parent = node.parent
    while parent is not None:
        if parent.type == "mod_item":
            names.append(_text(parent.child_by_field_name("name")))
        parent = parent.parent
    return names[::-1]


def _file_relative(segments: list[str], inline: list[str]) -> list[str]:
    """Rewrite a path written inside inline modules so that it reads from the file's module."""
    if not inline or not segments:
        return segments
    scope = list(inline)
    rest = list(segments)
    if rest[0] == "self":
        return ["self", *scope, *rest[1:]]
    while rest and rest[0] == "super" and scope:
        scope.pop()
        rest.pop(0)
    if rest and rest[0] == "super":
        return rest
    if len(rest) < len(segments):
        return ["self", *scope, *rest]
    return segments


def _path_attribute(node: ts.Node) -> str | None:
    """The file named by a `#[path = "..."]` attribute written before a `mod` item."""
    sibling = node.prev_named_sibling
    while sibling is not None and sibling.type in ("attribute_item", "line_comment"):
        attribute = sibling.named_children[0] if sibling.named_child_count else None
        if attribute is not None and attribute.type == "attribute":
            ident = attribute.named_children[0] if attribute.named_child_count else None
            value = attribute.child_by_field_name("value")
            if _text(ident) == "path" and value is not None:
                return _text(value).strip('"')
        sibling = sibling.prev_named_sibling
    return None


def _segments(node: ts.Node | None) -> list[str]:
    return [] if node is None else [s.strip() for s in _text(node).split("::")]


def _use_paths(node: ts.Node, prefix: list[str]) -> Iterator[list[str]]:
    """The flat paths of one `use` tree: `a::{b, c::{d}}` → [a, b], [a, c, d]."""
    kind = node.type
    if kind == "use_as_clause":
        yield from _use_paths(node.child_by_field_name("path") or node, prefix)
    elif kind == "use_wildcard":
        yield [*prefix, *_segments(node.named_children[0] if node.named_child_count else None), "*"]
    elif kind in ("scoped_use_list", "use_list"):
        path = node.child_by_field_name("path") if kind == "scoped_use_list" else None
        items = node.child_by_field_name("list") if kind == "scoped_use_list" else node
        base = [*prefix, *_segments(path)]
        for item in items.named_children if items is not None else []:
            if item.type == "self":
                yield base
            elif item.type not in ("line_comment", "block_comment"):
                yield from _use_paths(item, base)
    else:
        yield [*prefix, *_segments(node)]


_EXTRACT: dict[Language, Callable[[ts.Node, str], Iterator[Import]]] = {
    Language.JAVASCRIPT: _javascript,
    Language.TYPESCRIPT: _javascript,
    Language.JAVA: _java,
    Language.GO: _go,
    Language.RUST: _rust,
}
