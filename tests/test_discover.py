"""Source discovery: extensions, vendored folders, and the files skipped with a reason."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import MakeRepo, git

from neo_ray.models import Language, SkippedFile, SourceFile
from neo_ray.pipeline.discover import discover, language_of


def tracked(root: Path) -> list[str]:
    """git's tracked files, as clone.py hands them on."""
    return git(root, "ls-files").splitlines()


def test_every_extension_maps_to_its_language() -> None:
    expected = {
        "a.py": Language.PYTHON,
        "a.pyi": Language.PYTHON,
        "a.js": Language.JAVASCRIPT,
        "a.mjs": Language.JAVASCRIPT,
        "a.cjs": Language.JAVASCRIPT,
        "a.jsx": Language.JAVASCRIPT,
        "a.ts": Language.TYPESCRIPT,
        "a.tsx": Language.TYPESCRIPT,
        "a.mts": Language.TYPESCRIPT,
        "a.cts": Language.TYPESCRIPT,
        "x/A.java": Language.JAVA,
        "main.go": Language.GO,
        "lib.rs": Language.RUST,
    }
    assert {path: language_of(path) for path in expected} == expected
    for other in ("README.md", "setup.cfg", "Makefile", ".py", "a.pyc", "a.json"):
        assert language_of(other) is None


def test_vendored_and_generated_folders_are_left_out_silently(make_repo: MakeRepo) -> None:
    files = {
        "src/app.py": "",
        "node_modules/lib/index.js": "",
        "vendor/github.com/x/y.go": "",
        "third_party/z.py": "",
        "dist/bundle.js": "",
        "build/lib/app.py": "",
        "target/debug/build.rs": "",
        "pkg/__pycache__/m.py": "",
        ".venv/lib/site-packages/m.py": "",
        "web/app.min.js": "",
        "demo.egg-info/x.py": "",
        "web/app.jsx": "",
    }
    root = make_repo(files)
    expected = [
        SourceFile("src/app.py", Language.PYTHON),
        SourceFile("web/app.jsx", Language.JAVASCRIPT),
    ]
    assert discover(root, tracked(root), max_file_bytes=1000) == (expected, [])
    assert discover(root, None, max_file_bytes=1000) == (expected, [])


def test_only_tracked_files_count_when_git_lists_them(make_repo: MakeRepo) -> None:
    root = make_repo({"a.py": "", "b.go": "package b\n"})
    (root / "untracked.py").write_text("import a\n")
    found, _ = discover(root, tracked(root), max_file_bytes=1000)
    assert [f.path for f in found] == ["a.py", "b.go"]
    walked, _ = discover(root, None, max_file_bytes=1000)
    assert [f.path for f in walked] == ["a.py", "b.go", "untracked.py"]


def test_bad_files_are_skipped_with_a_reason(make_repo: MakeRepo, tmp_path: Path) -> None:
    outside = tmp_path / "secret.py"
    outside.write_text("password = 1\n")
    root = make_repo(
        {
            "ok.py": "import os\n",
            "binary.py": b"\x00\x01\x02import os",
            "latin1.py": b"name = '\xe9t\xe9'\n",
            "big.js": "x = 1;\n" * 40,
            "sub/real.py": "x = 1\n",
        }
    )
    os.symlink(outside, root / "leak.py")
    os.symlink("sub/real.py", root / "alias.py")
    os.symlink("missing.py", root / "dangling.py")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "links")
    for listing in (tracked(root), None):
        found, skipped = discover(root, listing, max_file_bytes=200)
        assert [f.path for f in found] == ["alias.py", "ok.py", "sub/real.py"]
        assert skipped == [
            SkippedFile("big.js", "file too large (280 bytes > 200)"),
            SkippedFile("binary.py", "binary file (NUL bytes)"),
            SkippedFile("dangling.py", "broken symlink"),
            SkippedFile("latin1.py", "invalid UTF-8 at byte 8"),
            SkippedFile("leak.py", "symlink leads out of the repository"),
        ]


def test_empty_repository_and_repository_without_sources(make_repo: MakeRepo) -> None:
    empty = make_repo({})
    assert discover(empty, tracked(empty), max_file_bytes=1000) == ([], [])
    assert discover(empty, None, max_file_bytes=1000) == ([], [])
    docs = make_repo({"README.md": "# hi\n", "data/x.json": "{}", "Makefile": "all:\n"})
    assert discover(docs, tracked(docs), max_file_bytes=1000) == ([], [])
