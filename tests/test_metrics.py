"""neo-ray's metrics, read back from Ray's Prometheus endpoint of the session's cluster."""

from __future__ import annotations

import re

import httpx
import pytest
import ray
from ray_fixtures import System, wait_for

from neo_ray.config import Settings
from neo_ray.edge.metrics import rates
from neo_ray.models import JobRecord, JobStatus, utcnow_iso

pytestmark = pytest.mark.ray


def scrape() -> str:
    """Every node's Prometheus text (one node in the session's cluster)."""
    texts = []
    for node in ray.nodes():
        if node["Alive"]:
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            texts.append(httpx.get(url, timeout=10).text)
    return "\n".join(texts)


def value(text: str, name: str, **labels: str) -> float | None:
    """The sum of a metric's samples whose labels include `labels`; None when there is none."""
    found = None
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:{{(.*)}})? ([0-9.eE+-]+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            found = (found or 0.0) + float(m.group(2))
    return found


def test_job_queue_stage_and_http_metrics_reach_prometheus(neo_system: System) -> None:
    repo = neo_system.sample_repo("metrics")
    with neo_system.http() as http:
        from urllib.parse import quote

        reply = http.post(
            f"/api/v1/ingestion/ingest/{quote(str(repo), safe='')}", headers=neo_system.auth()
        )
        assert reply.status_code == 202
        http.get("/api/v1/ingestion/jobs/not-a-uuid")  # a 400, counted under its route
    record = neo_system.wait_job(reply.json()["job_id"])
    assert record["status"] == "complete"

    def exported() -> str | None:
        text = scrape()
        wanted = [
            value(text, "ray_neo_jobs_total", outcome="complete"),
            value(text, "ray_neo_queue_depth"),
            value(text, "ray_neo_dead_letters"),
            value(text, "ray_neo_processing"),
            value(text, "ray_neo_stage_seconds_count", stage="train"),
            value(text, "ray_neo_walks_per_second"),
            value(text, "ray_neo_training_pairs_per_second"),
            value(text, "ray_neo_qdrant_upserts_per_second"),
            value(
                text,
                "ray_neo_http_requests_total",
                route="/api/v1/ingestion/jobs/{job_id}",
                status="400",
            ),
            value(
                text,
                "ray_neo_http_requests_total",
                route="/api/v1/ingestion/ingest/{repo_url}",
                status="202",
            ),
        ]
        return text if all(v is not None for v in wanted) else None

    text = wait_for(exported, 90, every_s=2.0)
    assert value(text, "ray_neo_jobs_total", outcome="complete") >= 1
    assert value(text, "ray_neo_stage_seconds_count", stage="train") >= 1
    assert value(text, "ray_neo_walks_per_second") > 0
    # Routes are templates: no job id or repository URL becomes a label value.
    assert "not-a-uuid" not in text and str(repo) not in text


def test_rates_follow_from_the_record() -> None:
    record = JobRecord(
        repo_url="file:///r",
        status=JobStatus.COMPLETE,
        duration_seconds=3.0,
        files_processed=10,
        embeddings_generated=10,
        timestamp=utcnow_iso(),
        job_id="j",
        stage_seconds={"train": 2.0, "upload": 0.5},
    )
    settings = Settings(walks_per_node=10, walk_length=20, context_size=10, epochs=1)
    got = rates(record, settings)
    assert got == {"walks": 50.0, "pairs": 100 * 11 * 10 / 2.0, "upserts": 20.0}


def test_the_grafana_dashboard_queries_only_metrics_neo_ray_exports() -> None:
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    dashboard = json.loads((root / "docs" / "grafana-neo-ray.json").read_text())
    queried = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"ray_(neo_\w+)", target["expr"])
    }
    sources = (root / "neo_ray" / "edge" / "metrics.py").read_text()
    sources += (root / "neo_ray" / "control" / "metrics.py").read_text()
    defined = set(re.findall(r'"(neo_\w+)"', sources))
    assert queried and queried <= defined, queried - defined


def test_the_plain_asgi_app_counts_nothing_and_never_imports_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom neo_ray.control import api\napp = api.create_app()\n"
        "assert not app.user_middleware, app.user_middleware\n"
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
