"""Import resolution rules, language by language, on files written to disk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from conftest import write_tree

from neo_ray.models import Import, Language, SourceFile
from neo_ray.pipeline.discover import language_of
from neo_ray.pipeline.resolve import Resolver


class Repo:
    """A folder of files and a Resolver over its sources."""

    def __init__(self, root: Path, files: Mapping[str, str]) -> None:
        write_tree(root, files)
        self.sources = {
            p: SourceFile(p, lang) for p in files if (lang := language_of(p)) is not None
        }
        self.resolver = Resolver(list(self.sources.values()), root)

    def __call__(self, importer: str, imp: Import) -> list[str]:
        return self.resolver.resolve(self.sources[importer], imp)


MakeRepo = Callable[[Mapping[str, str]], Repo]


@pytest.fixture
def repo(tmp_path: Path) -> MakeRepo:
    """Factory: repo({path: text}) → a Repo in a fresh folder under tmp_path."""
    counter = iter(range(100))
    return lambda files: Repo(tmp_path / f"r{next(counter)}", files)


# --- Python: grimp's semantics ---------------------------------------------------------


def test_python_module_or_its_parent_as_grimp_reads_them(repo: MakeRepo) -> None:
    r = repo(
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/m.py": "",
            "pkg/a.py": "",
        }
    )
    assert r("pkg/a.py", Import("pkg.sub.m")) == ["pkg/sub/m.py"]
    assert r("pkg/a.py", Import("pkg.sub.m.func")) == ["pkg/sub/m.py"]
    assert r("pkg/a.py", Import("pkg.sub.missing.deeper")) == []
    assert r("pkg/a.py", Import("pkg.sub", names=("m", "attr"), kind="from")) == [
        "pkg/sub/__init__.py",
        "pkg/sub/m.py",
    ]
    assert r("pkg/a.py", Import("pkg.nothere", names=("y",), kind="from")) == []
    assert r("pkg/a.py", Import("pkg.sub", kind="from")) == ["pkg/sub/__init__.py"]  # star
    assert r("pkg/a.py", Import("os.path")) == []


def test_python_relative_imports_from_modules_and_packages(repo: MakeRepo) -> None:
    r = repo({"pkg/__init__.py": "", "pkg/sub/__init__.py": "", "pkg/sub/m.py": "", "pkg/b.py": ""})
    here = Import("", level=1, names=("m",), kind="from")
    assert r("pkg/sub/__init__.py", here) == ["pkg/sub/m.py"]  # a package's `.` is itself
    assert r("pkg/sub/m.py", Import("", level=2, names=("b",), kind="from")) == ["pkg/b.py"]
    assert r("pkg/sub/m.py", Import("", level=4, names=("x",), kind="from")) == []


def test_python_prefers_source_to_stub_and_names_an_installed_package(tmp_path: Path) -> None:
    r = Repo(
        tmp_path / "mylib",
        {"__init__.py": "", "core.py": "", "core.pyi": "", "only_stub.pyi": "", "x.py": ""},
    )
    assert r("x.py", Import("mylib.core")) == ["core.py"]
    assert r("x.py", Import("mylib", names=("only_stub",), kind="from")) == ["only_stub.pyi"]
    assert r("x.py", Import("mylib")) == ["__init__.py"]


def test_python_nearest_package_root_wins(repo: MakeRepo) -> None:
    r = repo(
        {
            "svc_a/common/__init__.py": "",
            "svc_a/main.py": "",
            "svc_b/common/__init__.py": "",
            "svc_b/main.py": "",
        }
    )
    assert r("svc_a/main.py", Import("common")) == ["svc_a/common/__init__.py"]
    assert r("svc_b/main.py", Import("common")) == ["svc_b/common/__init__.py"]


# --- JavaScript and TypeScript -----------------------------------------------------------


def test_script_extension_and_index_lookup(repo: MakeRepo) -> None:
    r = repo(
        {
            "src/a.ts": "",
            "src/a.js": "",
            "src/dir/index.tsx": "",
            "src/m.mts": "",
            "src/x.jsx": "",
            "src/y.ts": "",
            "src/main.js": "",
        }
    )
    assert r("src/y.ts", Import("./a")) == ["src/a.ts"]  # TypeScript first from a TS file
    assert r("src/main.js", Import("./a")) == ["src/a.js"]  # JavaScript first from a JS file
    assert r("src/y.ts", Import("./a.js")) == ["src/a.ts"]  # `.js` names its `.ts` source
    assert r("src/main.js", Import("./a.js")) == ["src/a.js"]
    assert r("src/y.ts", Import("./dir")) == ["src/dir/index.tsx"]
    assert r("src/y.ts", Import("./m.mjs")) == ["src/m.mts"]
    assert r("src/y.ts", Import("./x")) == ["src/x.jsx"]
    assert r("src/y.ts", Import("../../../outside")) == []
    assert r("src/y.ts", Import("/abs/path")) == []


def test_nearest_tsconfig_paths_with_extends_and_longest_prefix(repo: MakeRepo) -> None:
    r = repo(
        {
            "tsconfig.base.json": '{"compilerOptions": {"baseUrl": "./shared"}}',
            "tsconfig.json": '{"extends": "./tsconfig.base", "compilerOptions": {"paths": {'
            '"@/*": ["src/*"], "@/special/*": ["special/*", "fallback/*"]}}}',
            "shared/s.ts": "",
            "shared/src/a.ts": "",
            "shared/fallback/f.ts": "",
            "app/x.ts": "",
            "pkg/tsconfig.json": '{"compilerOptions": {"paths": {"@/*": ["lib/*"]}}}',
            "pkg/lib/a.ts": "",
            "pkg/y.ts": "",
        }
    )
    assert r("app/x.ts", Import("@/a")) == ["shared/src/a.ts"]  # paths from the base's baseUrl
    assert r("app/x.ts", Import("@/special/f")) == ["shared/fallback/f.ts"]
    assert r("app/x.ts", Import("s")) == ["shared/s.ts"]  # baseUrl itself
    assert r("pkg/y.ts", Import("@/a")) == ["pkg/lib/a.ts"]  # the nearest tsconfig rules
    assert r("pkg/y.ts", Import("s")) == []


def test_package_json_subpath_imports_with_conditions(repo: MakeRepo) -> None:
    r = repo(
        {
            "package.json": '{"imports": {"#db": {"types": "./db.d.ts", "import": "./src/db.mjs",'
            ' "default": "./src/db.cjs"}, "#utl/*": "./src/utl/*"}}',
            "src/db.mjs": "",
            "src/db.cjs": "",
            "src/utl/bus.mjs": "",
            "src/main.mjs": "",
        }
    )
    assert r("src/main.mjs", Import("#db")) == ["src/db.mjs"]
    assert r("src/main.mjs", Import("#utl/bus.mjs")) == ["src/utl/bus.mjs"]
    assert r("src/main.mjs", Import("#nothing")) == []


# --- Java ------------------------------------------------------------------------------------


def test_java_nearest_class_and_nested_or_static_members(repo: MakeRepo) -> None:
    r = repo(
        {
            "svc-a/src/main/java/com/x/Util.java": "",
            "svc-a/src/main/java/com/x/App.java": "",
            "svc-b/src/main/java/com/x/Util.java": "",
            "svc-b/src/main/java/com/x/App.java": "",
        }
    )
    a, b = "svc-a/src/main/java/com/x", "svc-b/src/main/java/com/x"
    assert r(f"{a}/App.java", Import("com.x.Util")) == [f"{a}/Util.java"]
    assert r(f"{b}/App.java", Import("com.x.Util")) == [f"{b}/Util.java"]
    assert r(f"{a}/App.java", Import("com.x.Util.Inner.Deeper")) == [f"{a}/Util.java"]
    assert r(f"{a}/App.java", Import("com.x.Util", names=("*",), kind="static")) == [
        f"{a}/Util.java"
    ]
    assert r(f"{a}/App.java", Import("com.x", names=("*",))) == [f"{a}/App.java", f"{a}/Util.java"]
    assert r(f"{a}/App.java", Import("com.y.Nope")) == []


# --- Go --------------------------------------------------------------------------------------


def test_go_packages_through_go_mod_without_test_files(repo: MakeRepo) -> None:
    r = repo(
        {
            "go.mod": "// the module\nmodule github.com/o/r // trailing\n",
            "main.go": "",
            "pkg/p/p.go": "",
            "pkg/p/q.go": "",
            "pkg/p/p_test.go": "",
        }
    )
    assert r("main.go", Import("github.com/o/r/pkg/p")) == ["pkg/p/p.go", "pkg/p/q.go"]
    assert r("main.go", Import("github.com/o/r/pkg/none")) == []
    assert r("main.go", Import("github.com/o/other/pkg/p")) == []


def test_go_without_go_mod_resolves_nothing(repo: MakeRepo) -> None:
    r = repo({"main.go": "", "pkg/p/p.go": ""})
    assert r("main.go", Import("pkg/p")) == []


# --- Rust ------------------------------------------------------------------------------------


def test_rust_workspace_crates_and_mod_rs_children(repo: MakeRepo) -> None:
    r = repo(
        {
            "Cargo.toml": '[workspace]\nmembers = ["crates/*"]\n',
            "crates/core/Cargo.toml": '[package]\nname = "core-lib"\n',
            "crates/core/src/lib.rs": "",
            "crates/core/src/net/mod.rs": "",
            "crates/core/src/net/tcp.rs": "",
            "crates/app/Cargo.toml": '[package]\nname = "app"\n',
            "crates/app/src/main.rs": "",
        }
    )
    core = "crates/core/src"
    assert r("crates/app/src/main.rs", Import("core_lib::net::tcp::Stream", kind="use")) == [
        f"{core}/net/tcp.rs"
    ]
    assert r("crates/app/src/main.rs", Import("core_lib", kind="extern_crate")) == [
        f"{core}/lib.rs"
    ]
    assert r(f"{core}/net/mod.rs", Import("tcp", kind="mod")) == [f"{core}/net/tcp.rs"]
    assert r(f"{core}/net/mod.rs", Import("self::tcp::Stream", kind="use")) == [
        f"{core}/net/tcp.rs"
    ]
    assert r(f"{core}/net/tcp.rs", Import("super::Listener", kind="use")) == [f"{core}/net/mod.rs"]
    assert r(f"{core}/net/tcp.rs", Import("serde::Serialize", kind="use")) == []
    # 2015 edition: a bare path from a nested module names a module of the crate root.
    assert r(f"{core}/net/tcp.rs", Import("net::mod_item", kind="use")) == [f"{core}/net/mod.rs"]


def test_every_language_drops_external_imports(repo: MakeRepo) -> None:
    r = repo({"a.py": "", "a.ts": "", "A.java": "", "a.go": "", "a.rs": ""})
    assert r("a.py", Import("requests")) == []
    assert r("a.ts", Import("react")) == []
    assert r("A.java", Import("java.util.List")) == []
    assert r("a.go", Import("fmt")) == []
    assert r("a.rs", Import("std::fmt", kind="use")) == []


def test_languages_are_resolved_against_their_own_files(repo: MakeRepo) -> None:
    r = repo({"util.py": "", "util.ts": "", "main.py": "", "main.ts": ""})
    assert r("main.py", Import("util")) == ["util.py"]
    assert r("main.ts", Import("./util")) == ["util.ts"]
    assert Language.PYTHON is r.sources["main.py"].language
