"""build_graph on real git repositories: the exact edges of every import form, per language,
and bad input reported in `skipped`, never fatal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeRepo, git, init_repo

from neo_ray.models import Language, Progress, RepoGraph, SkippedFile, Stage
from neo_ray.pipeline import graph as graph_module
from neo_ray.pipeline import parallel
from neo_ray.pipeline.graph import ProgressCallback, build_graph

Edges = set[tuple[str, str]]


def graph_of(root: Path, *, strict: bool = True, max_file_bytes: int = 100_000) -> RepoGraph:
    """The graph of a committed repository, from git's tracked list as clone.py passes it."""
    tracked = git(root, "ls-files").splitlines()
    return build_graph(
        root,
        repo=root.name,
        commit=git(root, "rev-parse", "HEAD"),
        tracked=tracked,
        max_file_bytes=max_file_bytes,
        strict=strict,
    )


def star(hub: str, *targets: str) -> Edges:
    return {(hub, t) for t in targets}


PYTHON_REPO = {
    "pyproject.toml": "[project]\nname = 'app'\n",
    "src/app/__init__.py": "from .core import run\n",
    "src/app/core.py": """import os
import numpy as np
import app.util.text
import app.util.text as again
from app import models
from app.models import User
from . import helpers
from .util import text
from app import stubbed
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from app.typing_only import T

def run():
    import app.lazy
    return os.getcwd()
""",
    "src/app/models.py": "import json\n\nclass User: ...\n",
    "src/app/helpers.py": '"""Helpers.\n\nExample::\n\n    import app.lazy\n"""\n'
    "from app.util import *\n",
    "src/app/util/__init__.py": "",
    "src/app/util/text.py": "from ..models import User\nfrom .. import helpers\n",
    "src/app/lazy.py": "",
    "src/app/typing_only.py": "T = int\n",
    "src/app/stubbed.pyi": "def f() -> int: ...\n",
    "src/app/orphan.py": "x = 1\n",
    "tests/test_core.py": "from app.core import run\nimport helpers_local\n",
    "tests/helpers_local.py": "",
    "tools/pkg2/__init__.py": "",
    "tools/pkg2/cli.py": "import app\nfrom pkg2.sub import thing\nfrom pkg2 import not_a_module\n",
    "tools/pkg2/sub.py": "thing = 1\n",
    "scripts/run.py": "import tools.pkg2.cli\nimport src.app.models\n",
}
PYTHON_EDGES = (
    star("src/app/__init__.py", "src/app/core.py")
    | star(
        "src/app/core.py",
        "src/app/util/text.py",
        "src/app/models.py",
        "src/app/helpers.py",
        "src/app/stubbed.pyi",
        "src/app/typing_only.py",
        "src/app/lazy.py",
    )
    | star("src/app/helpers.py", "src/app/util/__init__.py")
    | star("src/app/util/text.py", "src/app/models.py", "src/app/helpers.py")
    | star("tests/test_core.py", "src/app/core.py", "tests/helpers_local.py")
    | star(
        "tools/pkg2/cli.py", "src/app/__init__.py", "tools/pkg2/sub.py", "tools/pkg2/__init__.py"
    )
    | star("scripts/run.py", "tools/pkg2/cli.py", "src/app/models.py")
)

SCRIPT_REPO = {
    "package.json": '{"name": "web", "imports": {"#internal/*": "./src/internal/*.ts"}}',
    "tsconfig.json": """// comments and trailing commas, as tsc allows
{
  "extends": "./tsconfig.base.json",
  "compilerOptions": {
    "baseUrl": ".", /* paths below resolve from here */
  },
}
""",
    "tsconfig.base.json": '{"compilerOptions": {"paths": '
    '{"@lib/*": ["src/lib/*"], "@config": ["src/config.ts"]}}}',
    "src/index.ts": """/// <reference path="./globals.d.ts" />
import x from "./a";
import { b } from './b.js';
import * as c from "./c";
import "./side";
import type { T } from "./types";
export { e } from "./e";
export * from "./f";
const g = require("./g.cjs");
const h = await import("./h.mjs");
import { l } from "@lib/util";
import cfg from "@config";
import k from "src/k";
import { secret } from "#internal/secret";
import React from "react";
import fs from "node:fs";
import data from "./data.json";
import missing from "./missing";
""",
    "src/globals.d.ts": "declare const G: number;\n",
    "src/a.ts": "export default 1;\n",
    "src/b.ts": "export const b = 2;\n",
    "src/b.js": "// compiled output beside its source\nexports.b = 2;\n",
    "src/c/index.ts": "export * from '../a';\n",
    "src/side.ts": "console.log('side');\n",
    "src/types.ts": "export type T = number;\n",
    "src/e.tsx": "import a from './a';\nexport const e = <div>{a}</div>;\n",
    "src/f.js": "const a = require('./a');\nmodule.exports = { a };\n",
    "src/g.cjs": "module.exports = 1;\n",
    "src/h.mjs": "export default 1;\n",
    "src/lib/util.ts": "import a from '../a';\nexport const l = a;\n",
    "src/config.ts": "export default {};\n",
    "src/k.ts": "export default 3;\n",
    "src/internal/secret.ts": "export const secret = 1;\n",
    "src/data.json": "{}",
    "packages/ui/package.json": '{"name": "@acme/ui", "main": "src/index.js"}',
    "packages/ui/src/index.js": "export const Button = 1;\n",
    "packages/ui/src/theme.js": "export const theme = 1;\n",
    "app/main.jsx": "import { Button } from '@acme/ui';\n"
    "import { theme } from '@acme/ui/src/theme';\nimport x from '../src/a';\n",
}
SCRIPT_EDGES = (
    star(
        "src/index.ts",
        "src/globals.d.ts",
        "src/a.ts",
        "src/b.ts",
        "src/c/index.ts",
        "src/side.ts",
        "src/types.ts",
        "src/e.tsx",
        "src/f.js",
        "src/g.cjs",
        "src/h.mjs",
        "src/lib/util.ts",
        "src/config.ts",
        "src/k.ts",
        "src/internal/secret.ts",
    )
    | {(f, "src/a.ts") for f in ("src/c/index.ts", "src/e.tsx", "src/f.js", "src/lib/util.ts")}
    | star("app/main.jsx", "packages/ui/src/index.js", "packages/ui/src/theme.js", "src/a.ts")
)

JAVA = "src/main/java/com/acme"
JAVA_REPO = {
    "pom.xml": "<project/>\n",
    f"{JAVA}/app/Main.java": """package com.acme.app;

import com.acme.util.Strings;
import com.acme.model.*;
import static com.acme.util.Math2.square;
import static com.acme.util.Consts.*;
import com.acme.model.Order.Status;
import java.util.List;

public class Main {}
""",
    f"{JAVA}/util/Strings.java": "package com.acme.util;\nimport com.acme.model.User;\n"
    "public class Strings {}\n",
    f"{JAVA}/util/Math2.java": "package com.acme.util;\n"
    "public class Math2 { public static int square(int x) { return x * x; } }\n",
    f"{JAVA}/util/Consts.java": "package com.acme.util;\n"
    "public class Consts { public static final int N = 1; }\n",
    f"{JAVA}/model/User.java": "package com.acme.model;\npublic class User {}\n",
    f"{JAVA}/model/Order.java": "package com.acme.model;\n"
    "public class Order { public enum Status { NEW } }\n",
    "src/test/java/com/acme/app/MainTest.java": "package com.acme.app;\n"
    "import com.acme.app.Main;\nimport org.junit.Test;\npublic class MainTest {}\n",
}
JAVA_EDGES = star(
    f"{JAVA}/app/Main.java",
    f"{JAVA}/util/Strings.java",
    f"{JAVA}/model/User.java",
    f"{JAVA}/model/Order.java",
    f"{JAVA}/util/Math2.java",
    f"{JAVA}/util/Consts.java",
) | {
    (f"{JAVA}/util/Strings.java", f"{JAVA}/model/User.java"),
    ("src/test/java/com/acme/app/MainTest.java", f"{JAVA}/app/Main.java"),
}

GO_REPO = {
    "go.mod": "module example.com/shop\n\ngo 1.22\n",
    "main.go": """package main

import (
\t"fmt"
\t"example.com/shop/internal/cart"
\tdb "example.com/shop/internal/db"
\t. "example.com/shop/pkg/util"
\t_ "example.com/shop/pkg/driver"
)

func main() { fmt.Println(cart.N, db.N, Helper()) }
""",
    "internal/cart/cart.go": 'package cart\n\nimport "example.com/shop/internal/db"\n'
    "\nvar N = db.N\n",
    "internal/cart/total.go": "package cart\n\nfunc Total() int { return 0 }\n",
    "internal/cart/cart_test.go": 'package cart\n\nimport (\n\t"testing"\n'
    '\t"example.com/shop/pkg/util"\n)\n\nfunc TestX(t *testing.T) { util.Helper() }\n',
    "internal/db/db.go": "package db\n\nvar N = 1\n",
    "pkg/util/util.go": "package util\n\nfunc Helper() int { return 1 }\n",
    "pkg/driver/driver.go": 'package driver\n\nimport _ "github.com/lib/pq"\n',
    "tools/go.mod": "module example.com/tools\n",
    "tools/gen/main.go": 'package main\n\nimport (\n\t"example.com/shop/pkg/util"\n'
    '\t"example.com/tools/internal/x"\n)\n\nfunc main() { util.Helper(); x.X() }\n',
    "tools/internal/x/x.go": "package x\n\nfunc X() {}\n",
}
GO_EDGES = (
    star(
        "main.go",
        "internal/cart/cart.go",
        "internal/cart/total.go",
        "internal/db/db.go",
        "pkg/util/util.go",
        "pkg/driver/driver.go",
    )
    | star("internal/cart/cart.go", "internal/db/db.go")
    | star("internal/cart/cart_test.go", "pkg/util/util.go")
    | star("tools/gen/main.go", "pkg/util/util.go", "tools/internal/x/x.go")
)

RUST_REPO = {
    "Cargo.toml": '[package]\nname = "my-crate"\nversion = "0.1.0"\n',
    "src/lib.rs": """mod a;
pub mod b;
mod inline {
    use crate::a::Thing;
    mod nested;
}
use crate::b::c::Deep;
use a::{x, y::{z}};
extern crate serde;
use std::collections::HashMap;
#[path = "special/file.rs"]
mod special;
pub struct Root;
""",
    "src/a.rs": "mod y;\nuse super::b;\npub struct Thing;\npub fn x() {}\n",
    "src/a/y.rs": "use super::super::b::c;\npub fn z() {}\n",
    "src/b/mod.rs": "pub mod c;\nuse crate::Root;\n",
    "src/b/c.rs": "use crate::a::y::z;\npub struct Deep;\n",
    "src/inline/nested.rs": "use super::super::Root;\n",
    "src/special/file.rs": "pub fn special() {}\n",
    "src/bin/tool.rs": "use my_crate::b::c::Deep;\nmod helper;\nfn main() {}\n",
    "src/bin/helper.rs": "pub fn help() {}\n",
    "tests/integration.rs": "use my_crate::a;\n",
}
RUST_EDGES = (
    star(
        "src/lib.rs",
        "src/a.rs",
        "src/b/mod.rs",
        "src/inline/nested.rs",
        "src/b/c.rs",
        "src/a/y.rs",
        "src/special/file.rs",
    )
    | star("src/a.rs", "src/a/y.rs", "src/b/mod.rs")
    | star("src/a/y.rs", "src/b/c.rs")
    | star("src/b/mod.rs", "src/b/c.rs", "src/lib.rs")
    | star("src/b/c.rs", "src/a/y.rs")
    | star("src/inline/nested.rs", "src/lib.rs")
    | star("src/bin/tool.rs", "src/b/c.rs", "src/bin/helper.rs")
    | star("tests/integration.rs", "src/a.rs")
)

CASES = {
    "python": (PYTHON_REPO, PYTHON_EDGES, Language.PYTHON),
    "javascript-typescript": (SCRIPT_REPO, SCRIPT_EDGES, None),
    "java": (JAVA_REPO, JAVA_EDGES, Language.JAVA),
    "go": (GO_REPO, GO_EDGES, Language.GO),
    "rust": (RUST_REPO, RUST_EDGES, Language.RUST),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_edges_of_every_import_form(make_repo: MakeRepo, case: str) -> None:
    files, expected, language = CASES[case]
    graph = graph_of(make_repo(files, name=case))
    assert set(graph.edges) == expected
    assert graph.skipped == ()
    sources = {p for p in files if not p.endswith((".json", ".toml", ".xml", ".mod"))}
    assert {n.path for n in graph.nodes} == sources  # isolated files are nodes too
    if language is not None:
        assert {n.language for n in graph.nodes} == {language}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_default_scan_gives_the_strict_parse_graph(make_repo: MakeRepo, case: str) -> None:
    root = make_repo(CASES[case][0], name=case)
    default = build_graph(
        root,
        repo=root.name,
        commit=None,
        tracked=git(root, "ls-files").splitlines(),
        max_file_bytes=100_000,
    )
    strict = graph_of(root, strict=True)
    assert set(default.edges) == CASES[case][1]
    assert (default.nodes, default.edges, default.skipped) == (
        strict.nodes,
        strict.edges,
        strict.skipped,
    )


def test_the_default_keeps_broken_files_with_the_imports_it_can_read(big_repo: Path) -> None:
    strict = graph_with(big_repo, workers=0)
    default = graph_with(big_repo, workers=0, strict=False)
    broken = {"pkg/broken.py", "web/broken.ts"}
    assert {s.path for s in strict.skipped} - {s.path for s in default.skipped} == broken
    assert {n.path for n in default.nodes} == {n.path for n in strict.nodes} | broken
    assert ("pkg/broken.py", "pkg/m001.py") in default.edges
    assert ("web/broken.ts", "web/c1.ts") in default.edges
    kept = {e for e in default.edges if not broken & set(e)}
    assert kept == set(strict.edges)


def test_graph_is_sorted_deduplicated_and_deterministic(make_repo: MakeRepo) -> None:
    root = make_repo(
        {"a.py": "import b\nimport b\nfrom b import x\nimport a\n", "b.py": "import a\n"}
    )
    graph = graph_of(root)
    assert graph.edges == (("a.py", "b.py"), ("b.py", "a.py"))
    assert graph_of(root) == graph
    assert graph.commit == git(root, "rev-parse", "HEAD")
    assert list(graph.edges) == sorted(graph.edges)


def test_bad_files_are_skipped_with_reasons_and_the_rest_builds(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("import good\n")
    root = make_repo(
        {
            "main.py": "import good, binary, latin1, broken, big, leak\n",
            "good.py": "x = 1\n",
            "binary.py": b"import good\x00\x00",
            "latin1.py": b"import good\n# caf\xe9\n",
            "broken.py": "import good\n\ndef f(:\n    pass\n",
            "big.py": "import good\n" + "# padding\n" * 100,
        }
    )
    os.symlink(outside, root / "leak.py")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "link")
    graph = graph_of(root, max_file_bytes=500)
    assert [n.path for n in graph.nodes] == ["good.py", "main.py"]
    assert graph.edges == (("main.py", "good.py"),)
    assert graph.skipped == (
        SkippedFile("big.py", "file too large (1012 bytes > 500)"),
        SkippedFile("binary.py", "binary file (NUL bytes)"),
        SkippedFile("broken.py", "syntax error at line 3"),
        SkippedFile("latin1.py", "invalid UTF-8 at byte 17"),
        SkippedFile("leak.py", "symlink leads out of the repository"),
    )
    lenient = graph_of(root, strict=False, max_file_bytes=500)
    assert ("broken.py", "good.py") in lenient.edges
    assert "broken.py" not in {s.path for s in lenient.skipped}


def test_empty_repository_and_one_without_sources(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    listings: list[list[str] | None] = [[], None]
    for tracked in listings:
        graph = build_graph(empty, repo="e", commit=None, tracked=tracked, max_file_bytes=1000)
        assert (graph.nodes, graph.edges, graph.skipped) == ((), (), ())
    docs = tmp_path / "docs"
    init_repo(docs, {"README.md": "# docs\n", "conf.yaml": "a: 1\n"})
    graph = graph_of(docs)
    assert (graph.nodes, graph.edges, graph.skipped) == ((), (), ())


def test_progress_is_reported_periodically_not_per_file(make_repo: MakeRepo) -> None:
    files = {f"m{i:03}.py": f"import m{(i + 1) % 300:03}\n" for i in range(300)}
    root = make_repo(files)
    seen: list[Progress] = []
    graph = build_graph(
        root, repo="r", commit=None, tracked=list(files), max_file_bytes=1000, progress=seen.append
    )
    parsing = [p for p in seen if p.stage is Stage.PARSING]
    assert len(graph.edges) == 300
    assert parsing[0].done == 0 and parsing[-1].done == parsing[-1].total == 300
    assert 10 <= len(parsing) <= 60
    assert [p.done for p in parsing] == sorted(p.done for p in parsing)
    assert seen[-1].stage is Stage.RESOLVING and seen[-1].fraction == 1.0


# --- parsing in the process pool --------------------------------------------------------

needs_two_cores = pytest.mark.skipif(
    parallel.cpu_count() < 2, reason="the pool is only used with two cores or more"
)


@pytest.fixture
def fresh_pool() -> Iterator[None]:
    """Each test starts without a pool and leaves none behind."""
    parallel.shutdown()
    yield
    parallel.shutdown()


def big_repo_files() -> dict[str, str | bytes]:
    """More files than PARALLEL_MIN_FILES, in three languages, with every kind of bad file."""
    count = graph_module.PARALLEL_MIN_FILES + 60
    files: dict[str, str | bytes] = {
        f"pkg/m{i:03}.py": f"import pkg.m{i * 7 % count:03}\nfrom . import m{(i + 1) % count:03}\n"
        for i in range(count)
    }
    files["pkg/__init__.py"] = ""
    files.update({f"web/c{i}.ts": f"import x from './c{(i + 1) % 20}';\n" for i in range(20)})
    files.update({f"web/j{i}.js": f"require('./c{i}');\n" for i in range(20)})
    files["pkg/binary.py"] = b"import pkg.m001\x00\x00"
    files["pkg/latin1.py"] = b"import pkg.m001\n# caf\xe9\n"
    files["pkg/broken.py"] = "import pkg.m001\n\ndef f(:\n    pass\n"
    files["web/broken.ts"] = "import x from './c1';\nconst = ;\n"
    files["pkg/big.py"] = "import pkg.m001\n" + "# padding\n" * 300
    return files


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository of big_repo_files(), shared by the pool tests (they only read it)."""
    root = tmp_path_factory.mktemp("big") / "repo"
    init_repo(root, big_repo_files())
    return root


def graph_with(
    root: Path,
    workers: int | None,
    progress: ProgressCallback | None = None,
    *,
    strict: bool = True,
) -> RepoGraph:
    return build_graph(
        root,
        repo="big",
        commit=None,
        tracked=git(root, "ls-files").splitlines(),
        max_file_bytes=2000,
        progress=progress,
        strict=strict,
        workers=workers,
    )


@needs_two_cores
def test_pool_gives_the_same_graph_as_sequential_parsing(big_repo: Path, fresh_pool: None) -> None:
    root = big_repo
    sequential = graph_with(root, workers=0)
    graph_with(root, workers=None, strict=False)  # the fast scan is not worth a pool
    assert parallel.worker_pids() == frozenset()  # nor does workers=0 start one
    seen: list[Progress] = []
    pooled = graph_with(root, workers=2, progress=seen.append)
    assert len(parallel.worker_pids()) == 2  # it really ran in the pool
    assert pooled == sequential
    assert len(sequential.nodes) > graph_module.PARALLEL_MIN_FILES
    assert [(s.path, s.reason) for s in sequential.skipped] == [
        ("pkg/big.py", "file too large (3016 bytes > 2000)"),
        ("pkg/binary.py", "binary file (NUL bytes)"),
        ("pkg/broken.py", "syntax error at line 3"),
        ("pkg/latin1.py", "invalid UTF-8 at byte 21"),
        ("web/broken.ts", "syntax error at line 2"),
    ]
    parsing = [p.done for p in seen if p.stage is Stage.PARSING]
    total = len(pooled.nodes) + len(pooled.skipped)
    assert parsing[0] == 0 and parsing[-1] == total and parsing == sorted(parsing)
    assert len(parsing) >= 3  # reported as chunks complete, not only at the end


@needs_two_cores
def test_small_repositories_stay_sequential(make_repo: MakeRepo, fresh_pool: None) -> None:
    graph = graph_of(make_repo(PYTHON_REPO))
    assert set(graph.edges) == PYTHON_EDGES
    assert parallel.worker_pids() == frozenset()


@needs_two_cores
def test_pool_is_kept_for_later_calls(big_repo: Path, fresh_pool: None) -> None:
    first = graph_with(big_repo, workers=2)
    pids = parallel.worker_pids()
    second = graph_with(big_repo, workers=2)
    assert len(pids) == 2 and parallel.worker_pids() == pids
    assert second == first


@needs_two_cores
def test_a_killed_child_falls_back_to_sequential_then_a_new_pool(
    big_repo: Path, fresh_pool: None
) -> None:
    root = big_repo
    expected = graph_with(root, workers=0)
    graph_with(root, workers=2)
    old = parallel.worker_pids()
    os.kill(min(old), signal.SIGKILL)
    assert graph_with(root, workers=2) == expected  # the broken pool is noticed, not fatal
    assert graph_with(root, workers=2) == expected
    new = parallel.worker_pids()
    assert len(new) == 2 and not new & old
    assert not any(alive(pid) for pid in old)


@needs_two_cores
def test_a_child_killed_mid_parse_still_gives_the_whole_graph(
    big_repo: Path, fresh_pool: None
) -> None:
    root = big_repo
    expected = graph_with(root, workers=0)
    killed: list[int] = []

    def kill_once(p: Progress) -> None:
        if p.stage is Stage.PARSING and p.done and not killed:
            killed.append(min(parallel.worker_pids()))
            os.kill(killed[0], signal.SIGKILL)

    assert graph_with(root, workers=2, progress=kill_once) == expected
    assert killed


def test_the_pool_children_die_with_their_parent() -> None:
    """A parent killed by SIGKILL (no atexit) leaves no orphan: the fork server exits and
    takes the children with it."""
    script = (
        "import os, signal\n"
        "from neo_ray.pipeline import parallel\n"
        "if __name__ == '__main__':\n"
        "    list(parallel.map_chunks(abs, [-1, -2, -3, -4], 2))\n"
        "    print(*parallel.worker_pids(), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    # stdout is a file, not a pipe: a lingering child would hold a pipe open and hang run().
    with tempfile.TemporaryFile("w+") as stdout:
        out = subprocess.run([sys.executable, "-c", script], stdout=stdout, timeout=60)
        stdout.seek(0)
        printed = stdout.read()
    assert out.returncode == -signal.SIGKILL
    pids = [int(p) for p in printed.split()]
    assert pids
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def alive(pid: int) -> bool:
    """True while a process exists (not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
