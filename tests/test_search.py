"""Search, dependency, impact and repository routes, and their CLI, on repositories of known
structure ingested through the running system (HTTP → queue → worker → Qdrant + PostgreSQL)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import init_repo
from ray_fixtures import TOKEN, System

from neo_ray import cli

pytestmark = pytest.mark.ray

# A layered graph (see tests/test_graph_queries.py for the same shape in PostgreSQL alone):
# base ← models ⇄ registry; models ← service ← api ← app; service ← cli; models ← tests;
# worker imports both service and registry.
LAYERS = {
    "base.py": "BASE_VALUE = 1\n",
    "models.py": "import base\nimport registry\n",
    "registry.py": "import models\n",
    "service.py": "import models\n",
    "api.py": "import service\n",
    "app.py": "import api\n",
    "cli.py": "import service\n",
    "tests/test_models.py": "import models\n",
    "worker.py": "import service\nimport registry\n",
    "util.py": "UNUSED = True\n",
}


def clique_files(groups: int = 4, size: int = 6) -> dict[str, str]:
    """`groups` cliques of `size` files (each imports the later ones of its group), joined in
    a ring by one import between their first files."""
    files: dict[str, str] = {}
    for g in range(groups):
        for i in range(size):
            imports = [f"g{g}_{j}" for j in range(i + 1, size)]
            if i == 0:
                imports.append(f"g{(g + 1) % groups}_0")
            files[f"g{g}_{i}.py"] = "".join(f"import {m}\n" for m in imports)
    return files


# Built so that structural and lexical search disagree and hybrid finds the file both rank
# well. Names carry no tokens (one letter and digits are dropped), so only the bodies speak.
# Structure: q0 ⇄ a0 (a0 is q0's twin: both import x0), x0 → t1 → t2 → t3 → t4; b0 alone.
# Words: b0 shares three rare words with q0, x0 one, the others none.
HYBRID = {
    "q0.py": "import a0\nimport x0\n\ninvoice_total = ledger_entry = currency_rounding = 1\n",
    "a0.py": "import q0\nimport x0\n\nzebra_giraffe = 1\n",
    "x0.py": "import t1\n\ninvoice_parrot = 1\n",
    "t1.py": "import t2\n\nmaple_oak = 1\n",
    "t2.py": "import t3\n\ncedar_birch = 1\n",
    "t3.py": "import t4\n\nwillow_aspen = 1\n",
    "t4.py": "spruce_larch = 1\n",
    "b0.py": "invoice_total = ledger_entry = currency_rounding = 2\nledger_currency = 3\n",
}


@dataclass
class Ingested:
    neo: System
    layers: str
    cliques: str
    hybrid: str
    jobs: dict[str, str]


def _ingest(neo: System, root: Path) -> tuple[str, str]:
    source = root.resolve().as_uri()
    with neo.http() as http:
        reply = http.post(f"/api/v1/ingestion/ingest/{quote(source, safe='')}", headers=neo.auth())
    assert reply.status_code == 202, reply.text
    job = neo.wait_job(reply.json()["job_id"])
    assert job["status"] == "complete", job
    return job["repo_url"], job["job_id"]


@pytest.fixture(scope="module")
def ingested(neo_system: System) -> Ingested:
    jobs = {}
    layers, jobs["layers"] = _ingest(neo_system, _repo(neo_system, "layers", LAYERS))
    cliques, jobs["cliques"] = _ingest(neo_system, _repo(neo_system, "cliques", clique_files()))
    hybrid, jobs["hybrid"] = _ingest(neo_system, _repo(neo_system, "hybrid", HYBRID))
    return Ingested(neo_system, layers, cliques, hybrid, jobs)


def _repo(neo: System, name: str, files: dict[str, str]) -> Path:
    root = neo.repos / name
    init_repo(root, files)
    return root


def get(ing: Ingested, path: str, auth: bool = True, **params: Any) -> Any:
    with ing.neo.http() as http:
        return http.get(path, params=params, headers=ing.neo.auth() if auth else {})


def post(ing: Ingested, path: str, body: Any, auth: bool = True) -> Any:
    with ing.neo.http() as http:
        return http.post(path, json=body, headers=ing.neo.auth() if auth else {})


def flat(body: dict[str, Any]) -> dict[str, tuple[int, list[str]]]:
    """{file: (depth, path)} of a graph answer, checking its grouping on the way."""
    out = {}
    for group in body["by_depth"]:
        assert group["count"] == len(group["files"]) > 0
        for f in group["files"]:
            assert f["depth"] == group["depth"]
            out[f["file_path"]] = (f["depth"], f["path"])
    assert [g["depth"] for g in body["by_depth"]] == sorted(g["depth"] for g in body["by_depth"])
    assert body["total"] == len(out)
    return out


# --------------------------------------------------------------------------- graph routes


def test_dependents_to_depth_three_are_exact_with_one_shortest_path(ingested: Ingested) -> None:
    reply = get(
        ingested, "/api/v1/graph/dependents", repo_url=ingested.layers, file_path="base.py", depth=3
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["repo_url"], body["file_path"], body["direction"], body["depth"]) == (
        ingested.layers,
        "base.py",
        "dependents",
        3,
    )
    assert flat(body) == {
        "models.py": (1, ["base.py", "models.py"]),
        "registry.py": (2, ["base.py", "models.py", "registry.py"]),
        "service.py": (2, ["base.py", "models.py", "service.py"]),
        "tests/test_models.py": (2, ["base.py", "models.py", "tests/test_models.py"]),
        "api.py": (3, ["base.py", "models.py", "service.py", "api.py"]),
        "cli.py": (3, ["base.py", "models.py", "service.py", "cli.py"]),
        "worker.py": (3, ["base.py", "models.py", "registry.py", "worker.py"]),
    }
    assert all(f["language"] == "python" for g in body["by_depth"] for f in g["files"])


def test_dependencies_default_to_direct_imports(ingested: Ingested) -> None:
    body = get(
        ingested, "/api/v1/graph/dependencies", repo_url=ingested.layers, file_path="worker.py"
    ).json()
    assert body["depth"] == 1
    assert flat(body) == {
        "registry.py": (1, ["worker.py", "registry.py"]),
        "service.py": (1, ["worker.py", "service.py"]),
    }
    deep = get(
        ingested,
        "/api/v1/graph/dependencies",
        repo_url=ingested.layers,
        file_path="app.py",
        depth=10,
    ).json()
    assert flat(deep)["base.py"] == (4, ["app.py", "api.py", "service.py", "models.py", "base.py"])


def test_impact_of_a_leaf_and_of_a_hub(ingested: Ingested) -> None:
    leaf = post(
        ingested, "/api/v1/graph/impact", {"repo_url": ingested.layers, "files": ["app.py"]}
    )
    assert leaf.status_code == 200, leaf.text
    assert leaf.json() == {
        "repo_url": ingested.layers,
        "files": ["app.py"],
        "not_in_graph": [],
        "total": 0,
        "by_depth": [],
    }
    hub = post(
        ingested,
        "/api/v1/graph/impact",
        {"repo_url": ingested.layers, "files": ["base.py", "README.md", "base.py"]},
    ).json()
    assert hub["files"] == ["base.py"] and hub["not_in_graph"] == ["README.md"]
    reached = flat(hub)
    assert set(reached) == set(LAYERS) - {"base.py", "util.py"}
    assert reached["app.py"] == (4, ["base.py", "models.py", "service.py", "api.py", "app.py"])
    assert [(g["depth"], g["count"]) for g in hub["by_depth"]] == [(1, 1), (2, 3), (3, 3), (4, 1)]
    # Two changed files: each dependent counts once, from the nearer change.
    both = flat(
        post(
            ingested,
            "/api/v1/graph/impact",
            {"repo_url": ingested.layers, "files": ["base.py", "service.py"], "depth": 1},
        ).json()
    )
    assert both == {
        "models.py": (1, ["base.py", "models.py"]),
        "api.py": (1, ["service.py", "api.py"]),
        "cli.py": (1, ["service.py", "cli.py"]),
        "worker.py": (1, ["service.py", "worker.py"]),
    }


def test_repositories_list_and_detail(ingested: Ingested) -> None:
    listed = get(ingested, "/api/v1/repositories").json()["repositories"]
    by_url = {r["repo_url"]: r for r in listed}
    layers = by_url[ingested.layers]
    assert layers["files"] == len(LAYERS) and layers["edges"] == 10
    assert layers["languages"] == {"python": len(LAYERS)}
    assert layers["job_id"] == ingested.jobs["layers"]
    assert layers["commit_sha"] and len(layers["commit_sha"]) == 40
    assert layers["last_ingested_at"].endswith("Z")
    detail = get(ingested, f"/api/v1/repositories/{layers['id']}").json()
    assert {k: detail[k] for k in layers} == layers
    assert detail["job"]["job_id"] == ingested.jobs["layers"]
    assert detail["job"]["status"] == "complete" and detail["job"]["files_processed"] == len(LAYERS)


# --------------------------------------------------------------------------- errors


def test_every_route_needs_the_token(ingested: Ingested) -> None:
    calls = [
        ("get", "/api/v1/search/similar", {"repo_url": ingested.layers, "file_path": "base.py"}),
        ("get", "/api/v1/graph/dependencies", {"repo_url": ingested.layers, "file_path": "a.py"}),
        ("get", "/api/v1/graph/dependents", {"repo_url": ingested.layers, "depth": 99}),
        ("get", "/api/v1/repositories", {}),
        ("get", "/api/v1/repositories/1", {}),
    ]
    with ingested.neo.http() as http:
        for method, path, params in calls:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                reply = http.request(method, path, params=params, headers=headers)
                assert reply.status_code == 401, (path, headers, reply.text)
                assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        reply = http.post("/api/v1/graph/impact", json={"repo_url": ingested.layers, "files": []})
        assert reply.status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "why"),
    [
        ("/api/v1/graph/dependents", {"file_path": "base.py", "depth": 0}, "depth"),
        ("/api/v1/graph/dependents", {"file_path": "base.py", "depth": 11}, "depth"),
        ("/api/v1/graph/dependencies", {"file_path": "base.py", "depth": "x"}, "depth"),
        ("/api/v1/graph/dependencies", {}, "file_path"),
        ("/api/v1/search/similar", {"file_path": "base.py", "limit": 0}, "limit"),
        ("/api/v1/search/similar", {"file_path": "base.py", "limit": 101}, "limit"),
        ("/api/v1/search/similar", {"file_path": "base.py", "scope": "world"}, "scope"),
        ("/api/v1/search/similar", {"file_path": "base.py", "mode": "magic"}, "mode"),
        ("/api/v1/repositories", {"limit": 0}, "limit"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    ingested: Ingested, path: str, params: dict[str, Any], why: str
) -> None:
    reply = get(ingested, path, repo_url=ingested.layers, **params)
    assert reply.status_code == 400, reply.text
    assert why in reply.json()["detail"]


def test_bad_repository_urls_and_bodies_are_400(ingested: Ingested) -> None:
    reply = get(ingested, "/api/v1/graph/dependents", repo_url="ftp://x/y", file_path="a.py")
    assert reply.status_code == 400 and "invalid repository URL" in reply.json()["detail"]
    for body in ({"repo_url": ingested.layers, "files": []}, {"files": ["a.py"]}, ["a.py"]):
        reply = post(ingested, "/api/v1/graph/impact", body)
        assert reply.status_code == 400, (body, reply.text)
    assert get(ingested, "/api/v1/repositories/abc").status_code == 400


def test_unknown_repository_or_file_is_404(ingested: Ingested) -> None:
    never = "https://github.com/nobody/never-ingested"
    for path in (
        "/api/v1/graph/dependents",
        "/api/v1/graph/dependencies",
        "/api/v1/search/similar",
    ):
        reply = get(ingested, path, repo_url=never, file_path="a.py")
        assert reply.status_code == 404, reply.text
        assert "has not been ingested" in reply.json()["detail"]
        reply = get(ingested, path, repo_url=ingested.layers, file_path="nope.py")
        assert reply.status_code == 404 and "nope.py is not a file" in reply.json()["detail"]
    reply = post(ingested, "/api/v1/graph/impact", {"repo_url": never, "files": ["a.py"]})
    assert reply.status_code == 404
    assert get(ingested, "/api/v1/repositories/999999").status_code == 404


def test_openapi_describes_every_route_exactly(ingested: Ingested) -> None:
    spec = get(ingested, "/openapi.json", auth=False).json()
    paths = spec["paths"]
    schemas = spec["components"]["schemas"]
    expected = {
        ("/api/v1/search/similar", "get"): "SimilarResponse",
        ("/api/v1/graph/dependencies", "get"): "GraphResponse",
        ("/api/v1/graph/dependents", "get"): "GraphResponse",
        ("/api/v1/graph/impact", "post"): "ImpactResponse",
        ("/api/v1/repositories", "get"): "RepositoryList",
        ("/api/v1/repositories/{repo_id}", "get"): "RepositoryDetail",
    }
    for (path, method), model in expected.items():
        ok = paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}, path
    params = {p["name"]: p for p in paths["/api/v1/graph/dependents"]["get"]["parameters"]}
    assert params["depth"]["schema"]["minimum"] == 1 and params["depth"]["schema"]["maximum"] == 10
    assert params["repo_url"]["required"] and params["file_path"]["required"]
    similar = {p["name"]: p for p in paths["/api/v1/search/similar"]["get"]["parameters"]}
    assert set(similar) >= {"repo_url", "file_path", "limit", "scope", "mode", "authorization"}
    evidence = schemas["Evidence"]["properties"]
    assert set(evidence) == {"shared_neighbors", "graph_distance", "common_imports"}
    result = schemas["SimilarFile"]["properties"]
    assert set(result) == {"repo_url", "file_path", "language", "score", "evidence"}
    assert set(schemas["ImpactRequest"]["required"]) == {"repo_url", "files"}


# --------------------------------------------------------------------------- similar


def test_five_nearest_are_the_files_importers_and_imports(ingested: Ingested) -> None:
    reply = get(
        ingested,
        "/api/v1/search/similar",
        repo_url=ingested.cliques,
        file_path="g0_3.py",
        limit=5,
        mode="structural",
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["query"] == {
        "repo_url": ingested.cliques,
        "file_path": "g0_3.py",
        "language": "python",
        "limit": 5,
        "scope": "repo",
        "mode": "structural",
    }
    near = [r["file_path"] for r in body["results"]]
    # g0_3 is imported by g0_0, g0_1, g0_2 and imports g0_4, g0_5.
    assert set(near) == {"g0_0.py", "g0_1.py", "g0_2.py", "g0_4.py", "g0_5.py"}
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    for r in body["results"]:
        assert r["repo_url"] == ingested.cliques and r["language"] == "python"
        ev = r["evidence"]
        assert ev["graph_distance"] == 1
        clique = {f"g0_{i}.py" for i in range(6)} - {"g0_3.py", r["file_path"]}
        assert set(ev["shared_neighbors"]) == clique  # the rest of the clique, and no more
        assert ev["shared_neighbors"] == sorted(ev["shared_neighbors"])
        later = {f"g0_{i}.py" for i in range(4, 6)} - {r["file_path"]}
        mine = {f"g0_{i}.py" for i in range(int(r["file_path"][3]) + 1, 6)} - {"g0_3.py"}
        assert set(ev["common_imports"]) == later & mine


def test_evidence_distance_beyond_one_hop(ingested: Ingested) -> None:
    body = get(
        ingested,
        "/api/v1/search/similar",
        repo_url=ingested.cliques,
        file_path="g0_3.py",
        limit=23,
        mode="structural",
    ).json()
    found = {r["file_path"]: r["evidence"]["graph_distance"] for r in body["results"]}
    assert len(found) == 23 and "g0_3.py" not in found
    # g0_3 → g0_0 → g1_0 (ring) → g1_k: distance 2 to g1_0, 3 to its clique-mates.
    assert found["g1_0.py"] == 2 and found["g1_4.py"] == 3
    assert found["g2_0.py"] == 3 and found["g2_5.py"] == 4


def test_scope_all_searches_every_repository(ingested: Ingested) -> None:
    body = get(
        ingested,
        "/api/v1/search/similar",
        repo_url=ingested.layers,
        file_path="service.py",
        limit=100,
        scope="all",
        mode="structural",
    ).json()
    repos = {r["repo_url"] for r in body["results"]}
    assert {ingested.layers, ingested.cliques} <= repos
    assert len(body["results"]) >= len(LAYERS) - 1 + 24
    for r in body["results"]:
        if r["repo_url"] != ingested.layers:  # another graph: no path, nothing shared
            assert r["evidence"] == {
                "shared_neighbors": [],
                "graph_distance": None,
                "common_imports": [],
            }
    local = get(
        ingested,
        "/api/v1/search/similar",
        repo_url=ingested.layers,
        file_path="service.py",
        mode="structural",
    ).json()
    assert {r["repo_url"] for r in local["results"]} == {ingested.layers}
    assert len(local["results"]) == len(LAYERS) - 1


def ranked(ing: Ingested, mode: str, file_path: str = "q0.py") -> list[tuple[str, float]]:
    reply = get(ing, "/api/v1/search/similar", repo_url=ing.hybrid, file_path=file_path, mode=mode)
    assert reply.status_code == 200, reply.text
    assert reply.json()["query"]["mode"] == mode
    return [(r["file_path"], r["score"]) for r in reply.json()["results"]]


def test_the_default_mode_is_lexical(ingested: Ingested) -> None:
    """The mode the co-change benchmark chose (BENCHMARKS.md)."""
    body = get(
        ingested, "/api/v1/search/similar", repo_url=ingested.hybrid, file_path="q0.py"
    ).json()
    assert body["query"]["mode"] == "lexical"
    assert [r["file_path"] for r in body["results"]] == [f for f, _ in ranked(ingested, "lexical")]


def test_hybrid_ranks_first_what_neither_mode_alone_ranks_first(ingested: Ingested) -> None:
    structural = ranked(ingested, "structural")
    lexical = ranked(ingested, "lexical")
    hybrid = ranked(ingested, "hybrid")
    # The twin leads by structure, the look-alike in another corner by words ...
    assert structural[0][0] == "a0.py", structural
    assert lexical[0][0] == "b0.py", lexical
    # ... and only the files sharing a word with q0 have a lexical score at all.
    assert [f for f, _ in lexical] == ["b0.py", "x0.py"]
    # x0 is second in both: reciprocal-rank fusion puts it first.
    assert hybrid[0][0] == "x0.py", (structural, lexical, hybrid)
    assert {f for f, _ in hybrid} == {f for f, _ in structural}
    assert [s for _, s in hybrid] == sorted((s for _, s in hybrid), reverse=True)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(ingested: Ingested, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ingested]:
    monkeypatch.setenv("NEO_HTTP_PORT", str(ingested.neo.settings.http_port))
    monkeypatch.setenv("NEO_DATA_DIR", str(ingested.neo.settings.data_dir))
    monkeypatch.setenv("PHAROS_ADMIN_TOKEN", TOKEN)
    yield ingested


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_deps_and_dependents(cli_env: Ingested, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "deps", cli_env.layers, "base.py", "--dependents", "--depth", "3"
    )
    assert code == 0
    assert "dependents of base.py" in out and ": 7 files" in out
    assert "depth 3 (3)" in out and "worker.py  via models.py → registry.py" in out
    code, out, _ = run_cli(capsys, "deps", cli_env.layers, "worker.py", "--json")
    assert code == 0
    assert flat(json.loads(out)) == {
        "registry.py": (1, ["worker.py", "registry.py"]),
        "service.py": (1, ["worker.py", "service.py"]),
    }
    code, _, err = run_cli(capsys, "deps", cli_env.layers, "nope.py")
    assert code == 1 and "HTTP 404" in err and "nope.py is not a file" in err


def test_cli_impact_reads_a_diff_from_stdin(
    cli_env: Ingested, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("service.py\nREADME.md\n\n"))
    code, out, _ = run_cli(capsys, "impact", cli_env.layers, "-", "--json")
    assert code == 0
    body = json.loads(out)
    assert body["files"] == ["service.py"] and body["not_in_graph"] == ["README.md"]
    assert set(flat(body)) == {"api.py", "cli.py", "worker.py", "app.py"}
    code, out, _ = run_cli(capsys, "impact", cli_env.layers, "app.py", "models.py")
    assert code == 0 and "reaches 6 dependent file(s)" in out
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run_cli(capsys, "impact", cli_env.layers, "-")
    assert code == 1 and "no changed files" in err


def test_cli_search(cli_env: Ingested, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "search",
        cli_env.cliques,
        "g0_3.py",
        "--limit",
        "5",
        "--mode",
        "structural",
        "--json",
    )
    assert code == 0
    body = json.loads(out)
    assert len(body["results"]) == 5 and body["query"]["file_path"] == "g0_3.py"
    code, out, _ = run_cli(
        capsys, "search", cli_env.cliques, "g0_3.py", "--limit", "3", "--mode", "structural"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("like g0_3.py (python)") and len(lines) == 4
    assert lines[0].endswith(": structural")
    assert all("distance 1" in line and "shared neighbours" in line for line in lines[1:])
