"""serve_config.yaml and cluster.yaml pass Ray's own validation; the cloud plane stays light."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_passes_ray_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(config)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert config["provider"]["type"] == "local"
    assert any('"edge": 1' in c for c in config["worker_start_ray_commands"])
    # Every node gets the cluster's token and runs Ray in token mode.
    assert config["file_mounts"]["~/.neo-ray-auth-token"] == ".neo/ray-auth-token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start


def test_serve_config_validates_and_imports() -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(
        yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    )
    app = schema.applications[0]
    assert app.name == "control" and app.route_prefix == "/"
    module, _, attr = app.import_path.partition(":")
    code = (
        f"import {module} as m; from ray.serve import Application; "
        f"assert isinstance(m.{attr}, Application)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_cloud_plane_never_imports_the_pipeline() -> None:
    code = (
        "import sys, neo_ray.control.app, neo_ray.control.api, neo_ray.system\n"
        "import neo_ray.stores.queue, neo_ray.stores.metadata\n"
        "heavy = [m for m in ('torch', 'tree_sitter', 'git', 'neo_ray.pipeline', "
        "'neo_ray.pipeline.embed', 'neo_ray.pipeline.parse', 'qdrant_client') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"NEO_MODE": "cloud", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-1500:]


def test_pipeline_modules_never_import_ray() -> None:
    modules = "clone, discover, parse, resolve, graph, embed, run, parallel, sample"
    code = (
        f"import sys\nfrom neo_ray.pipeline import {modules}\nimport neo_ray.stores.vectors\n"
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
