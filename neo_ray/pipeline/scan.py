"""Lexical import scans that answer exactly as tree-sitter would, or say they are unsure.

A scan reads the imports of a file without a syntax tree, several times faster than a full
parse. It returns None whenever the file holds something it cannot classify with certainty
(an `import` after other code on its line, a malformed statement, a `/` that may open a
regular expression, ...); the caller then parses the file with tree-sitter. So on a file
tree-sitter parses without error a scan's answer is tree-sitter's answer, never a guess.
"""

from __future__ import annotations

import bisect
import functools
import re
import sys

from neo_ray.models import Import, Language


def scan_imports(source: bytes, language: Language) -> list[Import] | None:
    """A file's imports as tree-sitter reads them, or None when a parse must decide."""
    if language is Language.PYTHON:
        return scan_python_imports(source)
    if language is Language.JAVASCRIPT:
        return scan_javascript_imports(source)
    return None


# --- Python ------------------------------------------------------------------------------

# A line that begins with `import` or `from` (after indentation) opens an import statement;
# the match ends where the keyword starts.
_STATEMENT_START = re.compile(rb"[ \t]*(?=import[ \t\\]|from[ \t\\.])")
_TRIPLE_QUOTES = (b'"""', b"'''")
# The word `import` where it is not part of a longer name (bytes >= 0x80 may be letters).
_IMPORT_WORD = re.compile(rb"import(?![\w\x80-\xff])")
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") | set(
    range(0x80, 0x100)
)


def scan_python_imports(source: bytes) -> list[Import] | None:
    """Python imports found by a lexical scan, or None where only a parse can tell.

    Every import statement holds the keyword `import`, so each occurrence of that word is
    accounted for: inside a triple-quoted string, a comment or a one-line string it is no
    statement; as the first word of a line (or the `import` of a `from` line) it opens one,
    read here; anywhere else (`x = 1; import y`, `if x: import y`, a continued line) the
    scan is unsure. A statement it cannot read is unsure too.
    """
    words = [
        at
        for at in (m.start() for m in _IMPORT_WORD.finditer(source))
        if at == 0 or source[at - 1] not in _NAME_BYTES
    ]
    if not words:
        return []
    strings = _triple_quoted_spans(source, words[-1])
    found: list[Import] = []
    covered = -1  # the end of the last statement read: words before it belong to it
    for at in words:  # the hot loop of a large repository's scan: kept flat
        if at < covered or (strings and _inside(strings, at)):
            continue
        line = source.rfind(b"\n", 0, at) + 1
        if (strings and _inside(strings, line)) or _continues(source, line):
            return None  # a string's tail or a continued line: its context is elsewhere
        keyword = _STATEMENT_START.match(source, line)
        if keyword is None:
            if not _outside_code(source[line:at]):
                return None
            continue
        statement = _statement_at(source, keyword.end())
        imports = _read_statement(statement)
        if imports is None:
            return None
        found.extend(imports)
        covered = keyword.end() + len(statement)
    return found


def _continues(source: bytes, line: int) -> bool:
    """True when the line starting at `line` continues the one before (a trailing `\\`)."""
    return line > 1 and (
        source[line - 2] == 92 or (source[line - 2] == 13 and source[line - 3 : line - 2] == b"\\")
    )


def _outside_code(prefix: bytes) -> bool:
    """True when what follows a line's prefix is surely in a comment or a one-line string."""
    if b'"""' in prefix or b"'''" in prefix:
        return False  # a triple-quoted string opened and closed on the line: not tracked
    return _in_comment_or_string(prefix)


# An import statement's grammar is regular once its logical line is known.
_NAME = r"[^\W\d]\w*"
_DOTTED = rf"{_NAME}(?:\s*\.\s*{_NAME})*"
_ALIASED = re.compile(rf"\s*({_DOTTED})(?:\s+as\s+{_NAME})?\s*")
_FROM = re.compile(rf"from\s*(\.*)\s*({_DOTTED})?\s*\bimport\b(.*)", re.S)
_COMMENT = re.compile(r"#[^\n]*")
_HAS_IMPORT = re.compile(r"\bimport\b")


@functools.lru_cache(maxsize=16384)
def _read_statement(raw: bytes) -> tuple[Import, ...] | None:
    """The imports of one `import ...` or `from ... import ...` logical line; None if it is
    malformed (only a parse can say what tree-sitter makes of it)."""
    text = _COMMENT.sub("", raw.decode("utf-8", "replace")).replace("\\\n", " ")
    if ";" not in text:
        return _simple_statement(text.strip())
    # `import a; import b`: each simple statement on its own; other code between them
    # must hold no `import` of its own.
    found: list[Import] = []
    for part in text.split(";"):
        part = part.strip()
        if not part.startswith(("import", "from")):
            if _HAS_IMPORT.search(part):
                return None
            continue
        imports = _simple_statement(part)
        if imports is None:
            return None
        found.extend(imports)
    return tuple(found)


def _simple_statement(text: str) -> tuple[Import, ...] | None:
    if text.startswith("import") and text[6:7].isspace():
        modules = _aliased_names(text[6:])
        return tuple(Import(m, kind="import") for m in modules) if modules else None
    match = _FROM.fullmatch(text)
    if match is None or not (match.group(1) or match.group(2)):
        return None
    dots, module, rest = match.groups()
    if module == "__future__" and not dots:
        return ()  # a compiler directive, not a module (tree-sitter's grammar agrees)
    rest = rest.strip()
    if rest == "*":
        names: list[str] | None = []
    else:
        names = _aliased_names(rest[1:-1] if rest.startswith("(") and rest.endswith(")") else rest)
    if names is None:
        return None
    return (Import(_undotted(module or ""), level=len(dots), names=tuple(names), kind="from"),)


def _aliased_names(text: str) -> list[str] | None:
    """`a.b as c, d` → [a.b, d]; None when a part is not a (dotted) name."""
    names = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _ALIASED.fullmatch(part)
        if match is None:
            return None
        names.append(_undotted(match.group(1)))
    return names or None


def _undotted(name: str) -> str:
    return "".join(name.split()) if " " in name or "\t" in name or "\n" in name else name


def _statement_at(source: bytes, at: int) -> bytes:
    """The logical line that starts at `at`: through a parenthesised name list or a `\\`."""
    end = _line_end(source, at)
    comment = source.find(b"#", at, end)
    paren = source.find(b"(", at, end if comment < 0 else comment)
    if paren >= 0:
        close = source.find(b")", paren)
        end = _line_end(source, close) if close >= 0 else len(source)
    while source[at:end].rstrip().endswith(b"\\") and end < len(source):
        end = _line_end(source, end + 1)
    return source[at:end]


def _line_end(source: bytes, at: int) -> int:
    end = source.find(b"\n", at)
    return len(source) if end < 0 else end


def _triple_quoted_spans(source: bytes, until: int) -> list[tuple[int, int]]:
    """(start, end) of the triple-quoted strings that open before offset `until`."""
    spans: list[tuple[int, int]] = []
    # Next occurrence of each delimiter, searched again only once passed, so that a file
    # full of one kind does not rescan to its end for the other.
    upcoming = {quote: source.find(quote) for quote in _TRIPLE_QUOTES}
    at = 0
    while True:
        for quote, index in upcoming.items():
            if 0 <= index < at:
                upcoming[quote] = source.find(quote, at)
        live = [(index, quote) for quote, index in upcoming.items() if index >= 0]
        if not live:
            return spans
        opening, quote = min(live)
        if opening > until:
            return spans
        line = max(at, source.rfind(b"\n", 0, opening) + 1)
        if _in_comment_or_string(source[line:opening]):
            at = opening + 3
            continue
        at = _closing_quote(source, opening + 3, quote)
        spans.append((opening, at))


def _closing_quote(source: bytes, at: int, quote: bytes) -> int:
    """The offset just past the quote that closes a string, skipping escaped quotes."""
    while True:
        close = source.find(quote, at)
        if close < 0:
            return len(source)
        backslashes = 0
        while source[close - 1 - backslashes] == 92:  # a backslash
            backslashes += 1
        if backslashes % 2 == 0:
            return close + 3
        at = close + 1


def _in_comment_or_string(prefix: bytes) -> bool:
    """True when the end of a line's prefix lies in a comment or a one-line string."""
    quote = 0
    escaped = False
    for byte in prefix:
        if escaped:
            escaped = False
        elif byte == 92:  # backslash
            escaped = True
        elif quote:
            quote = 0 if byte == quote else quote
        elif byte in (34, 39):  # " '
            quote = byte
        elif byte == 35:  # #
            return True
    return quote != 0


def _inside(spans: list[tuple[int, int]], at: int) -> bool:
    index = bisect.bisect_right(spans, (at, sys.maxsize)) - 1
    return index >= 0 and spans[index][0] < at < spans[index][1]


# --- JavaScript --------------------------------------------------------------------------
#
# tree-sitter's JavaScript query captures the string of `import ... from "x"`, `export ...
# from "x"`, `require("x")` and `import("x")`. A scan must know whether each of those words
# lies in code, which takes a lexer: strings, template literals, comments and regular
# expressions are skipped. Whether a `/` opens a regular expression or divides depends on
# the token before it; where that token does not settle it (`)`, `}`, `++`, a contextual
# keyword), or where JSX may start, the scan is unsure and the file goes to tree-sitter.

_JS_TOKEN = re.compile(
    rb"""["'`/<]|-->|(?<![\w$\x80-\xff])(?:require|import|export)(?![\w$\x80-\xff])"""
)
# Inside a template's `${...}` braces count too: the `}` that closes it resumes the string.
_JS_TOKEN_NESTED = re.compile(
    rb"""["'`/<{}]|-->|(?<![\w$\x80-\xff])(?:require|import|export)(?![\w$\x80-\xff])"""
)
_JS_STRINGS = {
    34: re.compile(rb'"(?:[^"\\\n\r]|\\[\s\S])*"'),
    39: re.compile(rb"'(?:[^'\\\n\r]|\\[\s\S])*'"),
}
_JS_TEMPLATE_PART = re.compile(rb"(?:[^`\\$]|\\[\s\S]|\$(?!\{))*(`|\$\{)")
_JS_REGEX = re.compile(rb"/(?:[^/\\\[\n\r]|\\[^\n\r]|\[(?:[^\]\\\n\r]|\\[^\n\r])*\])+/[\w$]*")
_JS_SPACE = b" \t\r\n\x0b\x0c"
_JS_NAME = _NAME_BYTES | {36}  # $
# After these words an expression starts, so `/` opens a regular expression.
_JS_BEFORE_EXPRESSION = frozenset(
    b"return typeof instanceof in new delete void throw case do else default extends".split()
)
# `if (x) /re/`: the words whose parenthesis a statement follows.
_JS_BLOCK_HEADS = frozenset(b"if while for with".split())
# `else {} /re/`: the words a block follows.
_JS_BLOCK_WORDS = frozenset(b"else do try finally".split())
# Words that are keywords in some places and names in others: the scan cannot tell.
_JS_AMBIGUOUS = frozenset(b"of yield await async let get set static".split())
# A module specifier as tree-sitter captures it: a string without escapes (an escape would
# split its fragment in two) and not empty (an empty string has no fragment).
_JS_SPEC = rb"""\s*(?:"([^"\\\n\r]*)"|'([^'\\\n\r]*)')"""
_JS_CALL = re.compile(rb"(?:require|import)\s*\(" + _JS_SPEC + rb"\s*[,)]")
_JS_CALL_OPEN = re.compile(rb"(?:require|import)\s*(\(\s*[\"']|\(|\?|/)?")
_JS_CLAUSE = rb"(?:[\w$]+\s*,\s*)?(?:[\w$]+|\*\s*as\s+[\w$]+|\{[^{}\"'`/]*\})"
_JS_IMPORT = re.compile(rb"import(?:\s*" + _JS_CLAUSE + rb"\s*from)?" + _JS_SPEC)
_JS_IMPORT_NOT_STATEMENT = re.compile(rb"import\s*[:.=,;)}\]]")
_JS_EXPORT = re.compile(rb"export\s*(?:\*(?:\s*as\s+[\w$]+)?|\{[^{}\"'`/]*\})\s*from" + _JS_SPEC)
_JS_EXPORT_LOCAL = re.compile(rb"export\s*\{[^{}\"'`/]*\}(?!\s*from\b)")
_JS_EXPORT_FROM = re.compile(rb"export\s*[*{]")


# TypeScript's triple-slash directive naming a file: `/// <reference path="./x.d.ts" />`.
# Read from the bytes, after a parse or a scan alike.
_REFERENCE = re.compile(
    rb"""^[ \t]*///[ \t]*<reference[ \t]+path[ \t]*=[ \t]*["']([^"'\n]+)["']""", re.M
)


def reference_directives(source: bytes) -> list[tuple[int, Import]]:
    """(offset, import) of every `/// <reference path="..." />` line."""
    if b"<reference" not in source:
        return []
    return [
        (m.start(), Import(m.group(1).decode("utf-8", "replace"), kind="reference"))
        for m in _REFERENCE.finditer(source)
    ]


class _Unsure(Exception):
    """The scan cannot tell what tree-sitter reads here."""


def scan_javascript_imports(source: bytes) -> list[Import] | None:
    """JavaScript imports found by a lexer, or None where only a parse can tell."""
    if not (b"require" in source or b"import" in source or b"export" in source):
        return []
    try:
        found = _JsLexer(source).run()
    except _Unsure:
        return None
    found += reference_directives(source)
    return [imp for _, imp in sorted(found, key=lambda pair: pair[0])]


class _JsLexer:
    """One pass over a file, skipping what is not code and reading the import forms."""

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.found: list[tuple[int, Import]] = []
        # Skipped spans (strings, comments, regular expressions), end → start, so that a
        # look back from a token can step over them.
        self.spans: dict[int, int] = {}
        # Per open `${`: its template's start and the `{` depth inside it.
        self.braces: list[list[int]] = []

    def run(self) -> list[tuple[int, Import]]:
        source = self.source
        at = source.find(b"\n") + 1 if source.startswith(b"#!") else 0
        while True:
            pattern = _JS_TOKEN_NESTED if self.braces else _JS_TOKEN
            match = pattern.search(source, at)
            if match is None:
                if self.braces:
                    raise _Unsure  # an unclosed `${`
                return self.found
            at = self._token(match.start(), source[match.start()])

    def _token(self, at: int, byte: int) -> int:
        """Handle the token at `at`; the offset to go on from."""
        if byte in _JS_STRINGS:
            return self._skip(_JS_STRINGS[byte], at)
        if byte == 96:  # `
            return self._template(at + 1, at)
        if byte == 47:  # /
            return self._slash(at)
        if self.source.startswith((b"<!--", b"-->"), at):
            raise _Unsure  # HTML-like comments: a lexer rule this scan does not follow
        if byte == 60:  # <
            following = self.source[at + 1 : at + 2]
            shift = self.source[at - 1 : at] == b"<"  # the second `<` of `<<`
            if (
                (following.isalpha() or following == b">")
                and not shift
                and self._expression_starts(at)
            ):
                raise _Unsure  # JSX: its text is neither code nor a string
            return at + 1
        if byte == 123:  # {
            self.braces[-1][1] += 1
            return at + 1
        if byte == 125:  # }
            if self.braces[-1][1]:
                self.braces[-1][1] -= 1
                return at + 1
            start, _ = self.braces.pop()
            return self._template(at + 1, start)
        return self._word(at)

    def _skip(self, pattern: re.Pattern[bytes], at: int) -> int:
        match = pattern.match(self.source, at)
        if match is None:
            raise _Unsure  # unterminated, or not what the lexer took it for
        self.spans[match.end()] = at
        return match.end()

    def _template(self, at: int, start: int) -> int:
        """Inside a template literal at `at`: through its end or into its next `${`."""
        match = _JS_TEMPLATE_PART.match(self.source, at)
        if match is None:
            raise _Unsure
        if match.group(1) == b"`":
            self.spans[match.end()] = start
        else:
            self.braces.append([start, 0])
        return match.end()

    def _slash(self, at: int) -> int:
        following = self.source[at + 1 : at + 2]
        if following == b"/":
            end = self.source.find(b"\n", at)
            end = len(self.source) if end < 0 else end
            # Keyed by its last non-blank byte, where a look back from the next token lands.
            self.spans[at + len(self.source[at:end].rstrip(_JS_SPACE))] = at
            return end
        if following == b"*":
            end = self.source.find(b"*/", at + 2)
            if end < 0:
                raise _Unsure
            self.spans[end + 2] = at
            return end + 2
        if self._expression_starts(at):
            return self._skip(_JS_REGEX, at)
        return at + 1

    def _word(self, at: int) -> int:
        source = self.source
        before = self._previous(at)
        if before > 0 and source[before - 1] == 46 and source[before - 3 : before] != b"...":
            return at + 6  # a property: `x.require(...)`, `x.import`
        word = source[at : at + 6]  # `requir`, `import` or `export`
        if word == b"export":
            self._export(at)
        elif self._word_before(before) == b"new":
            raise _Unsure  # `new require("x")` is no call
        else:
            self._call_or_import(at, word == b"import")
        return at + 6

    def _call_or_import(self, at: int, is_import: bool) -> None:
        call = _JS_CALL.match(self.source, at)
        if call is not None:
            self._add(call, "dynamic" if is_import else "require")
            return
        opening = _JS_CALL_OPEN.match(self.source, at)
        following = opening.group(1) if opening is not None else None
        if following is not None and following != b"(":
            raise _Unsure  # a string argument followed by more, `?.(`, or a comment
        if not is_import or following == b"(":
            return  # a call without a string argument, or `require` as a value
        statement = _JS_IMPORT.match(self.source, at)
        if statement is not None:
            self._add(statement, "import")
        elif _JS_IMPORT_NOT_STATEMENT.match(self.source, at) is None:
            raise _Unsure

    def _export(self, at: int) -> None:
        statement = _JS_EXPORT.match(self.source, at)
        if statement is not None:
            self._add(statement, "export")
        elif _JS_EXPORT_FROM.match(self.source, at) and not _JS_EXPORT_LOCAL.match(self.source, at):
            raise _Unsure

    def _add(self, match: re.Match[bytes], kind: str) -> None:
        group = 1 if match.group(1) is not None else 2
        if match.group(group):  # an empty string has no fragment to capture
            spec = match.group(group).decode("utf-8", "replace")
            self.found.append((match.start(group), Import(spec, kind=kind)))

    def _previous(self, at: int) -> int:
        """The end of the code token before `at` (0 at the file's start)."""
        source = self.source
        while True:
            while at > 0 and source[at - 1] in _JS_SPACE:
                at -= 1
            start = self.spans.get(at)
            if start is None or source[start] in b"\"'`":
                return at
            if source[start + 1] not in b"/*":
                return at  # a regular expression: a token of its own
            at = start  # a comment: look before it

    def _opening(self, close: int) -> int:
        """The offset of the bracket that the `)` or `}` at `close` closes."""
        source, spans = self.source, self.spans
        pair = {41: 40, 125: 123}[source[close]]
        depth = 0
        at = close
        while at >= 0:
            start = spans.get(at + 1)
            if start is not None:
                at = start - 1
                continue
            byte = source[at]
            if byte == source[close]:
                depth += 1
            elif byte == pair:
                depth -= 1
                if depth == 0:
                    return at
            at -= 1
        raise _Unsure

    def _block_ends(self, close: int) -> bool:
        """True when the `}` at `close` ends a block (a statement follows it), False when it
        ends an object literal (an operator follows); unsure for a function's body."""
        end = self._previous(self._opening(close))
        last = self.source[end - 1] if end else 59  # the file's start reads like `;`
        if last in b";{}":
            return True
        if last in _JS_NAME:
            word = self._word_before(end)
            if word in _JS_BLOCK_WORDS:
                return True
            if word in _JS_BEFORE_EXPRESSION:
                return False
            raise _Unsure
        if last == 62 and self.source[end - 2 : end] == b"=>":
            raise _Unsure  # an arrow function's body
        if last in b"(,=[?:!&|+-*%<>~^":
            return False
        raise _Unsure

    def _word_before(self, end: int) -> bytes:
        start = end
        while start > 0 and self.source[start - 1] in _JS_NAME:
            start -= 1
        return self.source[start:end]

    def _expression_starts(self, at: int) -> bool:
        """True when the token at `at` starts an expression (a `/` there opens a regular
        expression); raises _Unsure where the token before cannot tell."""
        end = self._previous(at)
        if end == 0:
            return True
        last = self.source[end - 1]
        if last in _JS_NAME:
            word = self._word_before(end)
            if word in _JS_AMBIGUOUS:
                raise _Unsure
            dotted = end - len(word) > 0 and self.source[end - len(word) - 1] == 46
            return word in _JS_BEFORE_EXPRESSION and not dotted
        if last == 41:  # ): `if (x) /re/` or `(x) / y`, as the word before its `(` says
            return self._word_before(self._previous(self._opening(end - 1))) in _JS_BLOCK_HEADS
        if last == 125:  # }: a block's end, or an object literal's
            return self._block_ends(end - 1)
        if last == 47:
            raise _Unsure
        if last in b"+-" and end > 1 and self.source[end - 2] == last:
            raise _Unsure  # `a++ / b` or `+ +/re/`
        return last not in b"]\"'`"
