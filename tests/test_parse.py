"""Import statements read by tree-sitter, per language and form, and the fast Python scan."""

from __future__ import annotations

import pytest

from neo_ray.errors import ParseError
from neo_ray.models import Import, Language
from neo_ray.pipeline.parse import parse_imports
from neo_ray.pipeline.scan import scan_javascript_imports, scan_python_imports

PYTHON = b'''"""Module docstring.

import not_an_import
from not_this import either
"""
import a.b.c
import d as e, f.g
from h.i import j, k as l
from . import m
from .. import n
from ..o.p import (
    q,  # a comment
    r as s,
)
from t import *
from.u import v
import w; import x
import y  # (a comment, not a parenthesised list
from __future__ import annotations

def func():
    import inside_function
    text = "import not_in_string"
    return text

if TYPE_CHECKING:
    from typing_only import T
try:
    import optional \\
        as opt
except ImportError:
    pass
x = """
    import not_in_triple_quotes
"""
y = 'single """ quotes'
from after_quotes import z
from ximport import importy
'''

PYTHON_EXPECTED = [
    Import("a.b.c", kind="import"),
    Import("d", kind="import"),
    Import("f.g", kind="import"),
    Import("h.i", names=("j", "k"), kind="from"),
    Import("", level=1, names=("m",), kind="from"),
    Import("", level=2, names=("n",), kind="from"),
    Import("o.p", level=2, names=("q", "r"), kind="from"),
    Import("t", kind="from"),
    Import("u", level=1, names=("v",), kind="from"),
    Import("w", kind="import"),
    Import("x", kind="import"),
    Import("y", kind="import"),
    Import("inside_function", kind="import"),
    Import("typing_only", names=("T",), kind="from"),
    Import("optional", kind="import"),
    Import("after_quotes", names=("z",), kind="from"),
    Import("ximport", names=("importy",), kind="from"),
]


def test_python_every_import_form() -> None:
    assert parse_imports(PYTHON, Language.PYTHON, "m.py") == PYTHON_EXPECTED


def test_python_fast_scan_reads_the_same_imports() -> None:
    assert scan_python_imports(PYTHON) == PYTHON_EXPECTED
    assert parse_imports(PYTHON, Language.PYTHON, strict=False) == PYTHON_EXPECTED


def test_python_fast_scan_ignores_comments_and_strings_that_look_like_imports() -> None:
    source = b"""# import commented
s = '''
from inside import single_quoted_triple
'''
t = "\\"\\"\\"" # an escaped quote is no triple quote
import real
"""
    assert scan_python_imports(source) == [Import("real", kind="import")]
    assert parse_imports(source, Language.PYTHON) == [Import("real", kind="import")]


def test_python_fast_scan_is_unsure_of_malformed_statements_and_leaves_them_to_the_parse() -> None:
    malformed = b"import\nfrom x import\nimport 3d\n"
    assert scan_python_imports(malformed) is None
    assert parse_imports(malformed, Language.PYTHON, strict=False) == parse_imports(
        malformed, Language.PYTHON, strict=False
    )
    assert scan_python_imports(b"x = 1\n") == []
    assert scan_python_imports(b"importlib = __import__\nx.import_module('y')\n") == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (b"x = 1; import y\n", [Import("y")]),
        (b"if x: import y\n", [Import("y")]),
        (b"from a \\\n    import b\n", [Import("a", names=("b",), kind="from")]),
        (b'x = """a"b"""; import y\n', [Import("y")]),
        (b's = """\n"""; import y\n', [Import("y")]),
        (
            b"from x import (a,  # a ) in a comment\n    b)\n",
            [Import("x", names=("a", "b"), kind="from")],
        ),
    ],
)
def test_python_fast_scan_leaves_what_it_cannot_place_to_the_parse(
    source: bytes, expected: list[Import]
) -> None:
    """Where the scan cannot be sure, it says so, and the lenient parse reads the file."""
    assert scan_python_imports(source) is None
    assert parse_imports(source, Language.PYTHON, strict=False) == expected
    assert parse_imports(source, Language.PYTHON) == expected


def test_python_fast_scan_reads_what_it_is_sure_of() -> None:
    source = (
        b"import a; import b\n"
        b's = "import not_this"  # import nor this\n'
        b"from .c import (d,\n    e as f)\n"
        b"t = '''\nimport inside_a_string\n'''\n"
    )
    expected = [
        Import("a"),
        Import("b"),
        Import("c", level=1, names=("d", "e"), kind="from"),
    ]
    assert scan_python_imports(source) == expected == parse_imports(source, Language.PYTHON)


JS_TRICKY = b"""#!/usr/bin/env node
// require("./line-comment")
/* import x from "./block-comment" */
const s = "require('./in-a-string')", t = 'import("./single")';
const u = `template require("./in-a-template") ${require("./in-a-substitution")} tail`;
const re = /require\\("\\.\\/in-a-regex"\\)/g, half = a / 2, third = (b + c) / 3 / re;
if (ok) /import("\\.\\/regex-after-if")/.test(x);
const obj = { require: 1, import: 2, export: 3 };
obj.require("./a-method"); x.import; lib.export;
const quarter = {}.n / 4; const nested = `${`${require("./deep")}`}`;
typeof require === "function" && require.resolve("./resolved");
require(name); require(`./template-argument`); require("");
import{minified}from"./minified";export{a as b};export*from"./star";
export { c, d } from './named-export';
module.exports = require('./last', 'more');
"""
JS_TRICKY_IMPORTS = [
    Import("./in-a-substitution", kind="require"),
    Import("./deep", kind="require"),
    Import("./minified", kind="import"),
    Import("./star", kind="export"),
    Import("./named-export", kind="export"),
    Import("./last", kind="require"),
]


def test_javascript_scan_skips_strings_comments_templates_and_regular_expressions() -> None:
    assert parse_imports(JS_TRICKY, Language.JAVASCRIPT, "a.js") == JS_TRICKY_IMPORTS
    assert scan_javascript_imports(JS_TRICKY) == JS_TRICKY_IMPORTS


@pytest.mark.parametrize(
    "source",
    [
        b"const el = <div>it's ok</div>; require('./after-jsx');\n",
        b"x = y++ / 2; require('./a');\n",
        b"for (x of /'/g) {} require('./a');\n",
        b"const f = () => {} / 1; require('./a');\n",
        b"new require('./not-a-call');\n",
        b"require('./a' + suffix);\n",
        b'require("./esc\\u0061pe");\n',
        b"<!-- an HTML comment\nrequire('./a');\n",
        b"import { 'string name' as x } from './a';\n",
        b"require('./unterminated);\n",
    ],
)
def test_javascript_scan_is_unsure_where_only_a_parse_can_tell(source: bytes) -> None:
    assert scan_javascript_imports(source) is None


def test_javascript_scan_keeps_reference_directives_in_place() -> None:
    source = b'/// <reference path="./globals.d.ts" />\nrequire("./a");\n'
    expected = [Import("./globals.d.ts", kind="reference"), Import("./a", kind="require")]
    assert scan_javascript_imports(source) == expected == parse_imports(source, Language.JAVASCRIPT)


def test_javascript_every_import_form() -> None:
    source = b"""
import x from "./default";
import { a, b as c } from './named';
import * as ns from "./namespace";
import "./side-effect";
export { e } from "./re-export";
export * from "./star";
const r = require("./required");
const lazy = () => import("./dynamic");
const notRequire = load("./nope");
const el = <div>{x}</div>;
"""
    imports = parse_imports(source, Language.JAVASCRIPT, "a.jsx")
    assert imports == [
        Import("./default", kind="import"),
        Import("./named", kind="import"),
        Import("./namespace", kind="import"),
        Import("./side-effect", kind="import"),
        Import("./re-export", kind="export"),
        Import("./star", kind="export"),
        Import("./required", kind="require"),
        Import("./dynamic", kind="dynamic"),
    ]


def test_typescript_every_import_form() -> None:
    source = b"""/// <reference path="./globals.d.ts" />
import type { T } from "./types";
import { type U, v } from "./mixed";
import w = require("./import-equals");
export type { X } from "./type-export";
export * as space from "./namespace-export";
export type * from "./type-star";
export type * as types from "./type-star-as";
function f<T>(x: T): T { return x; }
const y = <T,>(z: T) => import("./dynamic");
"""
    imports = parse_imports(source, Language.TYPESCRIPT, "a.ts")
    assert [i.module for i in imports] == [
        "./globals.d.ts",
        "./types",
        "./mixed",
        "./import-equals",
        "./type-export",
        "./namespace-export",
        "./type-star",
        "./type-star-as",
        "./dynamic",
    ]
    assert imports[0].kind == "reference"


def test_tsx_files_use_the_tsx_grammar() -> None:
    source = b'import x from "./a";\nexport const C = () => <div>{x}</div>;\n'
    assert parse_imports(source, Language.TYPESCRIPT, "c.tsx") == [Import("./a")]
    with pytest.raises(ParseError):
        parse_imports(source, Language.TYPESCRIPT, "c.ts")


def test_java_every_import_form() -> None:
    source = b"""package com.acme.app;
import com.acme.util.Strings;
import com.acme.model.*;
import static com.acme.util.Math2.square;
import static com.acme.util.Consts.*;
class Main {}
"""
    assert parse_imports(source, Language.JAVA) == [
        Import("com.acme.util.Strings"),
        Import("com.acme.model", names=("*",)),
        Import("com.acme.util.Math2.square", kind="static"),
        Import("com.acme.util.Consts", names=("*",), kind="static"),
    ]


def test_go_every_import_form() -> None:
    source = b"""package main
import "fmt"
import (
    db "example.com/shop/db"
    . "example.com/shop/util"
    _ "example.com/shop/driver"
    `example.com/shop/raw`
)
"""
    assert [i.module for i in parse_imports(source, Language.GO)] == [
        "fmt",
        "example.com/shop/db",
        "example.com/shop/util",
        "example.com/shop/driver",
        "example.com/shop/raw",
    ]


def test_rust_every_import_form() -> None:
    source = b"""mod a;
pub mod b;
mod inline {
    use super::sibling;
    use self::deeper::Thing;
    mod nested;
}
use crate::x::y;
use super::up as alias;
use self::here;
use tree::{leaf, branch::{twig, bud as b2}, self, *};
use ::std::collections::HashMap;
extern crate serde;
#[path = "special/file.rs"]
mod special;
"""
    imports = parse_imports(source, Language.RUST)
    assert imports == [
        Import("a", kind="mod"),
        Import("b", kind="mod"),
        Import("self::sibling", kind="use"),
        Import("self::inline::deeper::Thing", kind="use"),
        Import("inline::nested", kind="mod"),
        Import("crate::x::y", kind="use"),
        Import("super::up", kind="use"),
        Import("self::here", kind="use"),
        Import("tree::leaf", kind="use"),
        Import("tree::branch::twig", kind="use"),
        Import("tree::branch::bud", kind="use"),
        Import("tree", kind="use"),
        Import("tree", names=("*",), kind="use"),
        Import("::std::collections::HashMap", kind="use"),
        Import("serde", kind="extern_crate"),
        Import("special/file.rs", names=("special",), kind="mod_path"),
    ]


@pytest.mark.parametrize(
    ("language", "source", "line"),
    [
        (Language.PYTHON, b"import os\n\ndef broken(:\n    pass\n", 3),
        (Language.JAVASCRIPT, b'import x from "./x";\nconst = ;\n', 2),
        (Language.TYPESCRIPT, b"let a: number = 1;\nlet b: = 2;\n", 2),
        (Language.JAVA, b"import a.b.C;\nclass { }\n", 2),
        (Language.GO, b'package main\nimport "fmt"\nfunc main( {\n}\n', 3),
        (Language.RUST, b"use a::b;\nfn main() {\n    let x = ;\n}\n", 3),
    ],
)
def test_syntax_errors_raise_with_their_line(language: Language, source: bytes, line: int) -> None:
    with pytest.raises(ParseError, match=f"syntax error at line {line}$"):
        parse_imports(source, language)


def test_not_strict_reads_the_imports_of_a_file_with_a_syntax_error() -> None:
    source = b'import x from "./x";\nconst = ;\n'
    assert parse_imports(source, Language.JAVASCRIPT, strict=False) == [Import("./x")]
