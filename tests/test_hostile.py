"""Hostile repositories and inputs: the pipeline reports them and goes on, never hangs or dies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from neo_ray.cli import main
from neo_ray.errors import EmbedError
from neo_ray.pipeline.embed import load_edge_tsv
from neo_ray.pipeline.graph import build_graph


def _graph(folder: Path) -> dict[str, object]:
    graph = build_graph(folder, repo="r", commit=None, tracked=None, max_file_bytes=100_000)
    return graph.to_json()


def test_a_fifo_named_like_source_is_skipped_not_read(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("")
    os.mkfifo(tmp_path / "pipe.py")  # reading it would block forever
    out = _graph(tmp_path)
    assert out["edges"] == [["a.py", "b.py"]]
    assert out["skipped"] == [{"path": "pipe.py", "reason": "not a regular file"}]


def test_manifests_leading_out_or_to_devices_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "go.mod").symlink_to("/dev/zero")  # an endless read if followed
    (tmp_path / "package.json").symlink_to("/etc/passwd")
    (tmp_path / "main.go").write_text('package main\n\nimport "example.com/m/util"\n')
    (tmp_path / "util").mkdir()
    (tmp_path / "util" / "u.go").write_text("package util\n")
    out = _graph(tmp_path)
    assert {n["path"] for n in out["nodes"]} == {"main.go", "util/u.go"}  # type: ignore[index]
    assert out["edges"] == []  # no module path could be read: the import stays external


def test_a_file_name_that_is_not_utf8_is_reported_readably(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ok.py").write_text("")
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.py"), "wb") as f:
        f.write(b"import ok\n")
    assert main(["graph", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["skipped"] == [{"path": "bad\ufffd.py", "reason": "path is not valid UTF-8"}]
    assert [n["path"] for n in out["nodes"]] == ["ok.py"]


def test_build_output_is_skipped_at_the_top_but_a_package_named_build_is_kept(
    tmp_path: Path,
) -> None:
    for rel in ("build/lib/x.py", "src/tool/__init__.py", "src/tool/build/__init__.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    (tmp_path / "src/tool/main.py").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "src/tool/main.py").write_text("from tool import build\n")
    out = _graph(tmp_path)
    assert {n["path"] for n in out["nodes"]} == {  # type: ignore[index]
        "src/tool/__init__.py",
        "src/tool/build/__init__.py",
        "src/tool/main.py",
    }
    assert out["edges"] == [["src/tool/main.py", "src/tool/build/__init__.py"]]


@pytest.mark.parametrize("line", ["0\t99999999999999999999999", "0\t3000000000"])
def test_absurd_node_ids_are_refused_before_allocating(tmp_path: Path, line: str) -> None:
    edges = tmp_path / "e.tsv"
    edges.write_text(f"0\t1\n{line}\n")
    with pytest.raises(EmbedError, match=r"e\.tsv:2: node id .* too large"):
        load_edge_tsv(edges)
