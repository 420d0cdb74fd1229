"""serve_config.yaml and cluster.yaml pass Ray's own validation; the cloud plane stays light."""

from __future__ import annotations

import copy
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_serve_builder_takes_settings_overrides_and_validates_them() -> None:
    from neo_ray.control.app import build
    from neo_ray.errors import ConfigError

    app = build({"max_queue_size": "50", "redis_prefix": "neo:"})
    (settings,) = app._bound_deployment.init_args
    assert (settings.max_queue_size, settings.redis_prefix) == (50, "neo:")
    with pytest.raises(ConfigError, match="NEO_MAX_QUEUE_SIZE"):
        build({"max_queue_size": "0"})


# --- deployment files for the split (docs/deploy.md) ---------------------------------------


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (ROOT / "deploy/neo-ray-edge.service").read_text()
    assert "Restart=on-failure" in unit and "edge_service.py" in unit
    # Point the unit at this checkout (verify checks that the commands exist) and at a user
    # that exists here; everything else is verified as shipped.
    local = (
        unit.replace("/opt/neo-ray/.venv/bin/python", sys.executable)
        .replace("/opt/neo-ray/deploy", str(ROOT / "deploy"))
        .replace("User=neo-ray", "User=root")
        .replace("EnvironmentFile=/", "EnvironmentFile=-/")
    )
    path = tmp_path / "neo-ray-edge.service"
    path.write_text(local)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on some parse warnings: a clean unit prints nothing at all.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr


def test_launchd_plist_restarts_the_runner_on_failure() -> None:
    path = ROOT / "deploy/com.neo-ray.edge.plist"
    plist = plistlib.loads(path.read_bytes())
    assert plist["Label"] == "com.neo-ray.edge"
    assert plist["ProgramArguments"][1].endswith("deploy/edge_service.py")
    assert plist["KeepAlive"] == {"SuccessfulExit": False} and plist["RunAtLoad"] is True
    assert plist["EnvironmentVariables"]["NEO_MODE"] == "edge"
    if shutil.which("plutil"):
        subprocess.run(["plutil", "-lint", str(path)], check=True, timeout=30)


def test_render_blueprint_runs_the_plain_asgi_plane_from_the_base_install() -> None:
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    (web,) = blueprint["services"]
    assert web["buildCommand"] == "pip install ."  # the base distribution only
    assert web["startCommand"].startswith("neo-ray api ")
    env = {e["key"]: e for e in web["envVars"]}
    assert env["NEO_MODE"]["value"] == "cloud"
    for secret in ("PHAROS_ADMIN_TOKEN", "UPSTASH_REDIS_REST_TOKEN", "NEO_DATABASE_URL"):
        assert env[secret] == {"key": secret, "sync": False}  # entered in Render, not here


def test_deploy_guide_gives_the_nssm_commands() -> None:
    guide = (ROOT / "docs/deploy.md").read_text()
    for needed in ("nssm install neo-ray-edge", "AppExit Default Restart", "render.yaml"):
        assert needed in guide


def test_edge_runner_refuses_to_start_without_the_shared_settings(tmp_path: Path) -> None:
    env_file = tmp_path / "edge.env"
    env_file.write_text("# partial\nexport NEO_DATABASE_URL='postgresql://u:pw-123456@h/db'\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy/edge_service.py"), "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert "NEO_QDRANT_URL" in done.stderr and "UPSTASH_REDIS_REST_URL" in done.stderr
    assert "NEO_DATABASE_URL" not in done.stderr and "pw-123456" not in done.stderr
