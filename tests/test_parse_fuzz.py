"""Fuzzing each language's import extraction: random and mutated bytes never raise past it.

Seeded, bounded runs (a few hundred inputs per language) so the suite stays quick; a
failure prints the seed and the input to reproduce it.
"""

from __future__ import annotations

import random
import zlib

import pytest

from neo_ray.errors import ParseError
from neo_ray.models import Import, Language
from neo_ray.pipeline.parse import parse_imports
from neo_ray.pipeline.scan import scan_imports

SEEDS = {
    Language.PYTHON: (
        b"import os, sys as s\nfrom . import a\nfrom ..pkg.mod import (x, y)\n"
        b"if TYPE_CHECKING:\n    from typing import Any\ndef f():\n    import json\n"
    ),
    Language.JAVASCRIPT: (
        b"import a from './a.js';\nexport * from '../b';\nconst c = require('./c');\n"
        b'const d = await import(`./d.mjs`);\nexport { e } from "./e";\n'
    ),
    Language.TYPESCRIPT: (
        b"import type { A } from './a';\nexport type * from './t';\n"
        b"/// <reference path=\"./x.d.ts\" />\nimport b = require('./b');\n"
    ),
    Language.JAVA: b"package a.b;\nimport java.util.List;\nimport static a.b.C.d;\nimport a.b.*;\n",
    Language.GO: b'package main\nimport (\n  "fmt"\n  m "example.com/mod/pkg"\n  _ "embed"\n)\n',
    Language.RUST: b"mod a;\npub mod b { mod c; }\nuse crate::x::{y, z as w};\nuse super::*;\n",
}
PATHS = {Language.TYPESCRIPT: "src/x.tsx"}
ROUNDS = 150


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """Flip, insert, delete, duplicate and splice bytes: the classic mutations."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 12)):
        op = rng.randrange(5)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del out[at : at + rng.randint(1, 8)]
        elif op == 3:
            out[at:at] = out[rng.randrange(len(out) + 1) :][: rng.randint(1, 40)]
        else:
            out[at:at] = rng.choice(
                [b"\0", b"\xff\xfe", b"'", b'"', b"`", b"(", b"{", b"\\", b"\n"]
            )
    return bytes(out)


def _inputs(language: Language, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sample = SEEDS[language]
    data = [_mutate(rng, sample) for _ in range(ROUNDS)]
    data += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 400))) for _ in range(50)]
    return [*data, b"", b"\0" * 64, sample * 50]


@pytest.mark.parametrize("language", list(SEEDS), ids=lambda lang: lang.value)
@pytest.mark.parametrize("strict", [True, False])
def test_no_exception_escapes_import_extraction(language: Language, strict: bool) -> None:
    for i, data in enumerate(
        _inputs(language, seed=zlib.crc32(f"{language.value}{strict}".encode()))
    ):
        try:
            found = parse_imports(data, language, PATHS.get(language, ""), strict=strict)
        except ParseError:
            if not strict:
                raise AssertionError(f"non-strict parse raised on input {i}: {data!r}") from None
            continue  # strict mode reports broken files, as it should
        except Exception as exc:  # anything else is a bug
            raise AssertionError(f"input {i} raised {exc!r}: {data!r}") from exc
        assert all(isinstance(imp, Import) and isinstance(imp.module, str) for imp in found)


@pytest.mark.parametrize("language", list(SEEDS), ids=lambda lang: lang.value)
def test_the_lexical_scans_survive_the_same_inputs(language: Language) -> None:
    """The fast scans answer with imports or with None (unsure), never with an exception."""
    for i, data in enumerate(_inputs(language, seed=7)):
        try:
            found = scan_imports(data, language)
        except Exception as exc:
            raise AssertionError(f"input {i} raised {exc!r}: {data!r}") from exc
        assert found is None or all(isinstance(imp, Import) for imp in found)


def test_the_seeds_themselves_yield_imports() -> None:
    """The fuzz starts from inputs that exercise every import form (else it proves little)."""
    for language, sample in SEEDS.items():
        found = parse_imports(sample, language, PATHS.get(language, ""))
        assert len(found) >= 3, (language, found)
