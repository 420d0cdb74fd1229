"""The pipeline CLI contracts: `neo-ray graph --json`, `neo-ray embed`, `neo-ray run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from neo_ray.cli import main
from neo_ray.pipeline import graph as graph_module
from neo_ray.pipeline import parallel
from neo_ray.pipeline.sample import sample_files, write_sample_repo

NEO = str(Path(sys.executable).with_name("neo-ray"))


def test_graph_json_is_exactly_the_contract(
    make_repo: object, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(  # type: ignore[operator]
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\nimport os\n",
            "pkg/b.py": "",
            "bad.py": "def (:\n",
            "logo.png": b"\x89PNG\x00",
        }
    )
    assert main(["graph", str(repo), "--json", "--strict"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["repo", "commit", "nodes", "edges", "skipped"]
    assert out["repo"] == repo.resolve().as_uri() and len(out["commit"]) == 40
    assert out["nodes"] == [
        {"path": "pkg/__init__.py", "language": "python"},
        {"path": "pkg/a.py", "language": "python"},
        {"path": "pkg/b.py", "language": "python"},
    ]
    assert out["edges"] == [["pkg/a.py", "pkg/b.py"]]
    assert out["skipped"] == [{"path": "bad.py", "reason": "syntax error at line 1"}]


def test_graph_keeps_broken_files_by_default_and_strict_leaves_them_out(
    make_repo: object, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(  # type: ignore[operator]
        {"a.py": "import b\n", "b.py": "import a\n\ndef broken(:\n", "c.js": "require('./a')\n"}
    )
    assert main(["graph", str(repo), "--json"]) == 0
    lenient = json.loads(capsys.readouterr().out)
    assert [n["path"] for n in lenient["nodes"]] == ["a.py", "b.py", "c.js"]
    assert lenient["edges"] == [["a.py", "b.py"], ["b.py", "a.py"]]
    assert lenient["skipped"] == []
    assert main(["graph", str(repo), "--json", "--strict"]) == 0
    strict = json.loads(capsys.readouterr().out)
    assert [n["path"] for n in strict["nodes"]] == ["a.py", "c.js"]
    assert strict["edges"] == []
    assert strict["skipped"] == [{"path": "b.py", "reason": "syntax error at line 3"}]


@pytest.mark.skipif(parallel.cpu_count() < 2, reason="the parse pool needs two cores")
@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_graph_command_leaves_no_process_behind(tmp_path: Path, strict: bool) -> None:
    """The parse pool runs (its children's pids are printed as it stops) and nothing of it,
    nor a fork server, outlives the command."""
    folder = tmp_path / "many"
    count = graph_module.LENIENT_PARALLEL_MIN_FILES + 100
    for i in range(count):
        (folder / f"pkg{i % 10}").mkdir(parents=True, exist_ok=True)
        (folder / f"pkg{i % 10}" / f"m{i}.py").write_text(f"import pkg{(i + 1) % 10}.m{i + 1}\n")
    marker = f"neo-test-{uuid.uuid4()}"
    script = (
        "import sys\n"
        "from neo_ray.pipeline import parallel\n"
        "stop = parallel.shutdown\n"
        "def report():\n"
        "    print(*sorted(parallel.worker_pids()), file=sys.stderr)\n"
        "    stop()\n"
        "parallel.shutdown = report\n"
        "from neo_ray.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    command = [sys.executable, "-c", script, "graph", str(folder), "--json"]
    env = {**os.environ, "NEO_PARSE_WORKERS": "2", "NEO_TEST_MARKER": marker}
    done = subprocess.run(
        command + (["--strict"] if strict else []),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(json.loads(done.stdout)["nodes"]) == count
    children = [int(pid) for pid in done.stderr.split()]
    assert len(children) == 2
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
    assert processes_with(marker) == []


def processes_with(marker: str) -> list[int]:
    """The live processes whose environment holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker.encode() in environ:
            found.append(int(entry.name))
    return found


def test_graph_summary_and_plain_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "plain"  # not a git repository: read in place
    for rel, text in sample_files().items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    assert main(["graph", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "files       38 (javascript 1, python 23, typescript 14)" in text
    assert "commit      -" in text and "edges       47" in text


def test_graph_refuses_a_host_off_the_allowlist(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "https://evil.example.com/a/b"]) == 1
    assert "not allowed" in capsys.readouterr().err


def test_embed_writes_n_by_dim_float32(tmp_path: Path) -> None:
    edges = tmp_path / "edges.tsv"
    edges.write_text(
        "# two triangles and a bridge\n0\t1\n1\t2\n2\t0\n3\t4\n4\t5\n5\t3\n2\t3\n\n7\t7\n"
    )
    out = tmp_path / "emb.npy"
    done = subprocess.run(
        [
            NEO,
            "embed",
            str(edges),
            "--out",
            str(out),
            "--dim",
            "16",
            "--epochs",
            "2",
            "--walk-length",
            "8",
            "--context-size",
            "4",
            "--walks-per-node",
            "4",
            "--seed",
            "3",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    vectors = np.load(out)
    assert vectors.shape == (8, 16) and vectors.dtype == np.float32  # N = largest id + 1
    assert np.isfinite(vectors).all()


def test_embed_reports_a_malformed_line(tmp_path: Path) -> None:
    edges = tmp_path / "edges.tsv"
    edges.write_text("0\t1\n1\tx\n")
    done = subprocess.run(
        [NEO, "embed", str(edges), "--out", str(tmp_path / "e.npy")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "edges.tsv:2:" in done.stderr and "Traceback" not in done.stderr


def test_run_stores_vectors_and_prints_the_summary(tmp_path: Path) -> None:
    repo = write_sample_repo(tmp_path / "sample")
    env = {**os.environ, "NEO_DATA_DIR": str(tmp_path / "data"), "NEO_EPOCHS": "2"}
    done = subprocess.run(
        [NEO, "run", str(repo), "--neighbors", "2"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "files       38" in out and "edges       47" in out and "skipped     0" in out
    assert "vectors     38 in 'code_structure_embeddings'" in out and "device      cpu" in out
    assert all(stage in out for stage in ("clone", "parse", "train", "upload"))
    assert out.count("like ") == 2
    # The vectors are in the store, and a second run replaces them (no duplicates).
    again = subprocess.run(
        [NEO, "run", str(repo)], capture_output=True, text=True, timeout=180, env=env
    )
    assert again.returncode == 0
    from neo_ray.config import Settings
    from neo_ray.stores.vectors import VectorStore

    store = VectorStore.open(Settings(data_dir=tmp_path / "data"))
    try:
        assert store.count(repo.resolve().as_uri()) == 38
    finally:
        store.close()


def test_run_json_prints_one_object_and_keeps_progress_on_stderr(tmp_path: Path) -> None:
    repo = write_sample_repo(tmp_path / "sample")
    env = {**os.environ, "NEO_DATA_DIR": str(tmp_path / "data"), "NEO_EPOCHS": "2"}
    done = subprocess.run(
        [NEO, "run", str(repo), "--json", "--neighbors", "1"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # the whole of stdout is one JSON object
    assert summary["repo"] == repo.resolve().as_uri() and len(summary["commit"]) == 40
    assert (summary["files"], summary["edges"], summary["skipped"]) == (38, 47, 0)
    assert summary["languages"] == {"javascript": 1, "python": 23, "typescript": 14}
    assert summary["skipped_files"] == []
    assert set(summary["seconds"]) == {"clone", "parse", "train", "upload"}
    assert all(seconds >= 0 for seconds in summary["seconds"].values())
    assert summary["total_seconds"] == pytest.approx(sum(summary["seconds"].values()), abs=1e-3)
    assert summary["device"] == "cpu" and summary["vectors"] == 38
    assert summary["collection"] == "code_structure_embeddings"
    [(hub, near)] = summary["neighbors"].items()
    assert len(near) == 3 and all(n["file_path"] != hub for n in near)
    assert "training" in done.stderr  # the progress bars, where they belong


def test_graph_command_imports_no_heavy_module(tmp_path: Path) -> None:
    """`neo-ray graph` on a folder loads neither torch, numpy, Qdrant's client, GitPython
    nor httpx: their imports took longer than building a large graph."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.py").write_text("import b\n")
    (plain / "b.py").write_text("")
    script = (
        "import contextlib, io, sys\n"
        "from neo_ray.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['graph', sys.argv[1], '--json']) == 0\n"
        "heavy = ('torch', 'numpy', 'qdrant_client', 'git', 'httpx', 'ray')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(plain)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == []
