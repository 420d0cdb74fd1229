"""The `neo-ray` command line: pipeline commands (graph, embed, run) and the system's controls."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neo_ray import names
from neo_ray.config import Mode, Settings, check_deployment, load_settings, mask_url
from neo_ray.errors import NeoRayError
from neo_ray.models import PipelineResult, Progress, RepoGraph

if TYPE_CHECKING:
    from tqdm import tqdm


class ProgressBars:
    """One tqdm bar per pipeline stage, on stderr so that stdout stays machine-readable."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if event.stage.value != self._stage:
            self.close()
            self._stage = event.stage.value
            self._bar = tqdm(
                total=max(event.total, 1),
                desc=f"{event.stage.value:<11}",
                file=sys.stderr,
                leave=True,
                dynamic_ncols=True,
                unit="",
            )
        if self._bar is not None:
            self._bar.total = max(event.total, 1)
            self._bar.n = min(event.done, self._bar.total)
            self._bar.set_postfix_str(event.message[:40], refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _source_ref(source: str, settings: Settings) -> Any:
    """A RepoRef for a CLI argument: a local folder is always allowed on one's own disk."""
    from neo_ray.pipeline import run as pipeline

    path = Path(source).expanduser()
    if path.exists():
        return pipeline.local_path_ref(path)
    if source.startswith("file://"):
        return pipeline.resolve_source(source, settings, own_disk=True)
    return pipeline.resolve_source(source, settings)


def _graph_summary(graph: RepoGraph) -> str:
    langs = Counter(n.language.value for n in graph.nodes)
    ins, _ = graph.degrees()
    top = sorted(ins.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    lines = [
        f"repository  {graph.repo}",
        f"commit      {graph.commit or '-'}",
        f"files       {len(graph.nodes)} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(langs.items()))
        + ")",
        f"edges       {len(graph.edges)}",
        f"skipped     {len(graph.skipped)}",
    ]
    lines += [f"  - {s.path}: {s.reason}" for s in graph.skipped[:20]]
    if len(graph.skipped) > 20:
        lines.append(f"  ... and {len(graph.skipped) - 20} more")
    if top and top[0][1] > 0:
        lines.append("most imported")
        lines += [f"  {n:>4}  {path}" for path, n in top if n > 0]
    return "\n".join(lines)


def _parse_mode(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings with `--strict` applied."""
    return settings.model_copy(update={"strict_parse": True}) if args.strict else settings


def cmd_graph(args: argparse.Namespace, settings: Settings) -> int:
    from neo_ray.pipeline import run as pipeline

    settings = _parse_mode(args, settings)
    bars = ProgressBars(enabled=not args.json and sys.stderr.isatty())
    try:
        graph = pipeline.graph_of(
            _source_ref(args.source, settings), settings, git_ref=args.ref, progress=bars
        )
    finally:
        bars.close()
    if args.json:
        # dumps, not dump: dump streams through the pure-Python encoder, several times slower
        # on a large graph.
        sys.stdout.write(json.dumps(graph.to_json()) + "\n")
    else:
        print(_graph_summary(graph))
    return 0


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from neo_ray.models import Node2VecParams
    from neo_ray.pipeline import embed

    edges, num_nodes = embed.load_edge_tsv(Path(args.edges))
    params = Node2VecParams(
        dim=args.dim,
        walk_length=args.walk_length,
        context_size=args.context_size,
        walks_per_node=args.walks_per_node,
        p=args.p,
        q=args.q,
        epochs=args.epochs,
        seed=args.seed,
    )
    device = embed.resolve_device(args.device)
    bars = ProgressBars(enabled=sys.stderr.isatty())
    try:
        vectors = embed.train_node2vec(edges, num_nodes, params, device=device, progress=bars)
    finally:
        bars.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.astype(np.float32, copy=False))
    print(
        f"wrote {vectors.shape[0]} × {vectors.shape[1]} float32 to {out} ({device})",
        file=sys.stderr,
    )
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from neo_ray.pipeline import run as pipeline
    from neo_ray.stores.vectors import VectorStore

    settings = _parse_mode(args, settings)
    ref = _source_ref(args.source, settings)
    store = VectorStore.open(settings)
    bars = ProgressBars()  # on stderr: stdout holds only the summary
    try:
        result = pipeline.run_pipeline(ref, settings, store, git_ref=args.ref, progress=bars)
        bars.close()
        neighbours = _neighbours(store, result.graph, args.neighbors)
        where = store.location
    finally:
        bars.close()
        store.close()
    if args.json:
        summary = _run_summary(result, settings.qdrant_collection, where, neighbours)
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(_graph_summary(result.graph))
    print(f"vectors     {result.embeddings} in '{settings.qdrant_collection}' ({where})")
    print(f"device      {result.device}")
    print("seconds     " + ", ".join(f"{k} {v:.2f}" for k, v in result.stage_seconds.items()))
    for path, near in neighbours.items():
        shown = ", ".join(f"{n.file_path} ({n.score:.2f})" for n in near)
        print(f"like {path}: {shown}")
    return 0


def _run_summary(
    result: PipelineResult, collection: str, where: str, neighbours: dict[str, list[Any]]
) -> dict[str, object]:
    """The `neo-ray run --json` contract: one object, every figure of the text summary."""
    graph = result.graph
    return {
        "repo": graph.repo,
        "commit": graph.commit,
        "files": len(graph.nodes),
        "languages": dict(sorted(Counter(n.language.value for n in graph.nodes).items())),
        "edges": len(graph.edges),
        "skipped": len(graph.skipped),
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in graph.skipped],
        "seconds": dict(result.stage_seconds),
        "total_seconds": round(sum(result.stage_seconds.values()), 4),
        "device": result.device,
        "vectors": result.embeddings,
        "collection": collection,
        "store": where,
        "neighbors": {
            path: [{"file_path": n.file_path, "score": round(n.score, 4)} for n in near]
            for path, near in neighbours.items()
        },
    }


def _neighbours(store: Any, graph: RepoGraph, count: int) -> dict[str, list[Any]]:
    """The structurally nearest files of the `count` most-connected files."""
    ins, outs = graph.degrees()
    hubs = sorted(ins, key=lambda p: (-(ins[p] + outs[p]), p))[:count]
    return {path: store.similar(graph.repo, path, k=3) for path in hubs}


# --- the system ------------------------------------------------------------------------
def _join_ray(settings: Settings, address: str | None = None) -> Any:
    """ray.init on the system's cluster, quietly; NeoRayError when there is none."""
    import logging

    import ray

    from neo_ray import raycluster

    address = address or raycluster.cluster_address(settings.data_dir)
    if address is None:
        raise NeoRayError("no running system: start it with `neo-ray up`")
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    return ray.init(
        address=address,
        namespace=names.NAMESPACE,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )


STORE_PROBE_S = 5.0
"""How long `up` waits for a configured Redis or PostgreSQL to answer before it gives up."""


class Rollback:
    """What `up` started so far, undone in reverse order when a later step fails."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], object]]] = []

    def add(self, what: str, undo: Callable[[], object]) -> None:
        self._undo.append((what, undo))

    def run(self) -> list[str]:
        undone = []
        for what, undo in reversed(self._undo):
            try:
                undo()
                undone.append(what)
            except Exception as exc:  # keep undoing the rest; say what could not be
                print(f"neo-ray: could not stop {what}: {exc}", file=sys.stderr)
        self._undo.clear()
        return undone


def _start_services(settings: Settings, rollback: Rollback) -> Settings:
    """The embedded servers this mode needs (unless URLs are configured), undone on failure."""
    from neo_ray import system
    from neo_ray.stores import embedded

    before = {name for name, up in embedded.status(settings.data_dir).items() if up}
    rollback.add(
        "the embedded services",
        lambda: embedded.stop_all(settings.data_dir, only=set(embedded.SERVICES) - before),
    )
    return system.with_services(settings)


def _start_ray(settings: Settings, rollback: Rollback) -> tuple[str, str | None, bool]:
    """The Ray cluster to deploy on: RAY_ADDRESS, this data dir's head, or a new head.

    Returns (address, dashboard, whether this call started the head).
    """
    from neo_ray import raycluster

    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], None, False
    head = raycluster.owned_head(settings.data_dir)
    if head is not None:
        return head["address"], head.get("dashboard"), False
    if cleared := raycluster.clear_dead_head(settings.data_dir):
        print(f"ray         stopped {cleared} processes left by a head that was killed")
    rollback.add("the Ray head", lambda: raycluster.stop_head(settings.data_dir))
    _waiting(f"for a new Ray head to start (at most {raycluster.HEAD_START_TIMEOUT_S:.0f} s)")
    address = raycluster.start_head(
        settings.data_dir,
        edge=settings.mode is not Mode.CLOUD,
        loopback=_loopback_head(settings.mode),
    )
    head = raycluster.owned_head(settings.data_dir) or {}
    return address, head.get("dashboard"), True


def _loopback_head(mode: Mode) -> bool:
    """Whether the head `up` starts keeps every Ray port on 127.0.0.1: all but edge mode's,
    which other machines join (local mode's stores listen on 127.0.0.1, so a node elsewhere
    could not use them; cloud mode's workers pull from the queue, they never join)."""
    return mode is not Mode.EDGE


def _waiting(what: str) -> None:
    """Say what `up` waits for and for how long at most, before it waits."""
    print(f"waiting     {what}", flush=True)


def _check_stores(settings: Settings) -> None:
    """Fail fast, before any Ray process starts, when the queue or the database does not
    answer: a bad NEO_REDIS_URL would otherwise surface only when /health gives up."""
    from neo_ray.stores.metadata import probe

    if settings.redis_url and settings.upstash_rest() is None:
        from neo_ray.stores.queue import probe as probe_redis

        where = mask_url(settings.redis_url)
        _waiting(f"for Redis at {where} to answer (at most {STORE_PROBE_S:.0f} s)")
        probe_redis(settings.redis_url, timeout_s=STORE_PROBE_S)
    elif settings.has_queue:
        from neo_ray.stores.queue import Broker

        _waiting(f"for Upstash REST to answer (at most {settings.upstash_timeout_s:.0f} s a call)")
        with Broker.from_settings(settings) as broker:
            if not broker.ping():
                raise NeoRayError(
                    "Upstash REST does not answer, or refuses the token; check "
                    "UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN"
                )
    if settings.database_url:
        _waiting(f"for PostgreSQL to answer (at most {STORE_PROBE_S:.0f} s)")
        probe(settings.database_url, ca=settings.database_ca, timeout_s=STORE_PROBE_S)


def _check_http_port(settings: Settings) -> None:
    """Fail before deploying when another process holds the HTTP port."""
    import socket

    family = socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET
    with socket.socket(family) as s:
        # As a server binds: a closed server's TIME_WAIT sockets do not hold the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((settings.http_host, settings.http_port))
        except OSError as exc:
            raise NeoRayError(
                f"the HTTP port {settings.http_host}:{settings.http_port} is in use by another "
                f"process ({exc.strerror}); free it or set NEO_HTTP_PORT"
            ) from None


def _bring_up(settings: Settings, rollback: Rollback) -> dict[str, Any]:
    """Every step of `up`; returns the record of what runs."""
    import ray

    from neo_ray import raycluster, system

    system.check_mode(settings)  # before any embedded server starts: edge never runs alone
    if settings.mode is not Mode.CLOUD:
        settings = _start_services(settings, rollback)
    _check_stores(settings)
    settings = system.ensure_token(settings)
    address, dashboard, started = _start_ray(settings, rollback)
    print(f"ray         {'started a head node' if started else 'joined ' + address}")
    if started and settings.mode is not Mode.EDGE:
        _check_http_port(settings)
    _join_ray(settings, address)
    try:
        if not _deployed():  # never tear down a system that ran before this `up`
            rollback.add("the actors and the Serve app", lambda: _teardown(settings, address))
        system.deploy(settings, say=_waiting)
        if settings.mode is not Mode.EDGE:
            _waiting(f"for the API to be healthy (at most {system.HEALTH_TIMEOUT_S:.0f} s)")
            system.wait_healthy(system.api_base(settings), system.HEALTH_TIMEOUT_S)
    finally:
        ray.shutdown()
    head = None if os.environ.get("RAY_ADDRESS") else raycluster.owned_head(settings.data_dir)
    return {
        "data_dir": str(settings.data_dir),
        "mode": settings.mode.value,
        "ray_address": address,
        "ray_dashboard": dashboard,
        # Whether the head listens on 127.0.0.1 alone (`ray` commands then need the switch).
        "ray_loopback": bool(head and head.get("loopback")),
        "api": system.api_base(settings) if settings.mode is not Mode.EDGE else None,
        "ray_auth_token_path": os.environ.get("RAY_AUTH_TOKEN_PATH"),
        # Masked: the record and up's output never carry a password.
        "redis_url": mask_url(settings.redis_url),
        "database_url": mask_url(settings.database_url),
        "qdrant": mask_url(settings.qdrant_url) or str(settings.data_dir / "qdrant-edge"),
    }


def _deployed() -> bool:
    """Whether the connected cluster already runs neo-ray's actors or a Serve controller."""
    import ray

    return any(
        a.get("namespace") == names.NAMESPACE or a.get("name") == "SERVE_CONTROLLER_ACTOR"
        for a in ray.util.list_named_actors(all_namespaces=True)
    )


def _teardown(settings: Settings, address: str) -> None:
    import ray

    from neo_ray import system

    _join_ray(settings, address)
    try:
        system.teardown()
    finally:
        ray.shutdown()


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from neo_ray import raycluster

    mode = Mode(args.mode) if args.mode else settings.mode
    settings = load_settings(mode=mode, data_dir=settings.data_dir)
    running = _running_system(settings)
    if running is not None:
        print(
            f"neo-ray is already running ({running['mode']} mode, data dir "
            f"{running['data_dir']}): API {running.get('api') or '-'}, Ray "
            f"{running['ray_address']}; stop it with `neo-ray down`"
        )
        return 0
    rollback = Rollback()
    try:
        state = _bring_up(settings, rollback)
    except BaseException as exc:
        undone = rollback.run()
        if undone:
            print("undone      " + ", ".join(undone), file=sys.stderr)
        if isinstance(exc, NeoRayError | KeyboardInterrupt):
            raise
        raise NeoRayError(f"up failed: {type(exc).__name__}: {exc}") from exc
    raycluster.record_system(settings.data_dir, state)
    _print_up(state, settings)
    return 0


def _running_system(settings: Settings) -> dict[str, Any] | None:
    """The system `up` recorded for this data dir, when its cluster and API still answer.

    Checked in a few seconds at most, so that a second `up` says so at once instead of
    redeploying into a busy system.
    """
    import httpx

    from neo_ray import raycluster

    state = raycluster.read_system(settings.data_dir)
    if not state or not state.get("ray_address"):
        return None
    if not raycluster.port_open(str(state["ray_address"]).removeprefix("ray://")):
        return None
    if state.get("api"):
        try:
            if httpx.get(f"{state['api']}/health", timeout=5.0).status_code != 200:
                return None
        except httpx.HTTPError:
            return None
    return state


def _print_up(state: dict[str, Any], settings: Settings) -> None:
    from neo_ray import system

    print(f"mode        {state['mode']}")
    if state["api"]:
        print(f"API         {state['api']}/api/v1/ingestion  (health: {state['api']}/health)")
        print(f"dashboard   {state['api']}/")
        print(f"API docs    {state['api']}/docs")
    if state["ray_dashboard"]:
        print(f"Ray         http://{state['ray_dashboard']}")
    if state["mode"] != Mode.CLOUD.value:
        print(f"redis       {mask_url(state['redis_url'])}")
        print(f"postgres    {mask_url(state['database_url'])}")
        print(f"qdrant      {mask_url(state['qdrant'])}")
    if (settings.data_dir / system.TOKEN_FILE).exists():
        print(f"token       {settings.data_dir / system.TOKEN_FILE}")
    if state["ray_auth_token_path"]:
        token = state["ray_auth_token_path"]
        print(f"ray token   {token}  (RAY_AUTH_TOKEN_PATH for `ray` and `serve`)")
    if state.get("ray_loopback"):
        from neo_ray.raycluster import LOOPBACK_SWITCH

        print(f"ray env     {LOOPBACK_SWITCH}=0  (for `ray` commands: Ray is on 127.0.0.1 only)")
    print(f"data        {settings.data_dir}")
    print("stop with   neo-ray down")


def cmd_ray_token(args: argparse.Namespace, settings: Settings) -> int:
    """The token file every Ray node of this system uses (RAY_AUTH_TOKEN_PATH), for copying
    to edge machines and to `ray up`'s cluster.yaml."""
    from neo_ray import raycluster

    path = raycluster.use_auth_token(settings.data_dir)
    if path is None:
        print("neo-ray: Ray uses RAY_AUTH_TOKEN or RAY_AUTH_MODE is not token", file=sys.stderr)
        return 1
    print(path)
    return 0 if os.access(path, os.R_OK) else 1


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    import ray

    from neo_ray import raycluster, system
    from neo_ray.stores import embedded

    address = raycluster.cluster_address(settings.data_dir)
    if address is None:
        print("ray         no cluster running")
    else:
        try:
            _join_ray(settings, address)
            ours = raycluster.owned_head(settings.data_dir) is not None
            removed = system.teardown(shutdown_serve=ours)
            print("removed     " + (", ".join(removed) or "nothing"))
        except Exception as exc:  # whatever Ray says, still stop what we own below
            print(f"ray         could not connect to {address}: {exc}", file=sys.stderr)
        finally:
            ray.shutdown()
    if stopped_head := raycluster.stop_head(settings.data_dir):
        print(f"ray         stopped the head node neo-ray started ({stopped_head} processes)")
    stopped = embedded.stop_all(settings.data_dir)
    print("services    " + (", ".join(stopped) or "none running"))
    raycluster.forget_system(settings.data_dir)
    return 0


def _client(settings: Settings) -> Any:
    """An HTTP client for the running system's API (the address `up` recorded)."""
    import httpx

    from neo_ray import raycluster, system

    state = raycluster.read_system(settings.data_dir) or {}
    base = state.get("api") or system.api_base(settings)
    return httpx.Client(base_url=base, timeout=10.0)


def _token(settings: Settings) -> str | None:
    from neo_ray import system

    secret = settings.admin_token or system.read_token(settings.data_dir)
    return secret.get_secret_value() if secret is not None else None


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from urllib.parse import quote

    source = args.source
    if Path(source).expanduser().exists():
        source = Path(source).expanduser().resolve().as_uri()
    headers = {}
    token = _token(settings)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    params = {"ref": args.ref} if args.ref else None
    with _client(settings) as http:
        reply = http.post(
            f"/api/v1/ingestion/ingest/{quote(source, safe='')}", headers=headers, params=params
        )
        try:
            body = reply.json()
        except ValueError:  # not neo-ray answering (a proxy's error page, say)
            body = {"detail": reply.text[:200]}
        if reply.status_code not in (200, 202):
            raise NeoRayError(f"HTTP {reply.status_code}: {body.get('detail', body)}")
        verb = "queued" if reply.status_code == 202 else "already queued"
        print(
            f"{verb} job {body['job_id']} for {body['repo_url']} "
            f"(position {body['queue_position']} of {body['queue_size']})"
        )
        if not args.wait:
            return 0
        return _follow(http, body["job_id"], args.json)


def _get_json(http: Any, path: str, **params: Any) -> dict[str, Any]:
    """GET a route's JSON; a non-2xx answer becomes a NeoRayError with the route's detail."""
    reply = http.get(path, params=params or None)
    try:
        body = reply.json()
    except ValueError:
        body = {"detail": reply.text[:200]}
    if reply.status_code >= 300:
        raise NeoRayError(f"HTTP {reply.status_code} from {path}: {body.get('detail', body)}")
    return dict(body)


def _follow(http: Any, job_id: str, as_json: bool = False) -> int:
    """Show a live progress bar until the job ends; exit 0 only when it completes."""
    import time

    from tqdm import tqdm

    bar = tqdm(
        total=100,
        desc="queued     ",
        file=sys.stderr,
        dynamic_ncols=True,
        bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}",
    )
    try:
        misses = 0
        while True:
            try:
                job = _get_json(http, f"/api/v1/ingestion/jobs/{job_id}")
                misses = 0
            except NeoRayError:
                misses += 1  # a restart of the control plane: wait a little, then give up
                if misses > 120:
                    raise
                time.sleep(0.25)
                continue
            status = job.get("status")
            if status in ("complete", "failed", "skipped"):
                bar.n = 100 if status == "complete" else bar.n
                bar.set_description_str(f"{status:<11}")
                break
            bar.set_description_str(f"{job.get('stage') or status:<11}")
            bar.n = int(100 * float(job.get("progress") or 0))
            bar.refresh()
            time.sleep(0.25)
    finally:
        bar.close()
    if as_json:
        print(json.dumps(job, indent=2))
    else:
        _print_record(job)
    return 0 if status == "complete" else 1


def _print_record(job: dict[str, Any]) -> None:
    print(f"job         {job.get('job_id')}  {job.get('status')}  {job.get('repo_url')}")
    if job.get("status") == "complete":
        print(
            f"files       {job['files_processed']} ({job['files_skipped']} skipped), "
            f"{job['edges']} edges, {job['embeddings_generated']} vectors"
        )
        print(f"commit      {job.get('commit_sha')}")
        stages = job.get("stage_seconds") or {}
        print(
            f"seconds     {job['duration_seconds']:.2f} ("
            + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
            + ")"
        )
    else:
        print(f"why         {job.get('error') or job.get('reason')}")


def cmd_bulk(args: argparse.Namespace, settings: Settings) -> int:
    from neo_ray import bulk

    return bulk.bulk(args.file, settings, progress=not args.no_progress)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as http:
        body = _get_json(http, "/api/v1/ingestion/worker/status")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(f"status      {body['status']}")
    print(f"queue       {body['queue_size']} queued, {body['processing']} processing")
    for w in body["workers"]:
        stage = f" {w['stage']} {100 * w['progress']:.0f}%" if w.get("stage") else ""
        print(f"  {w['worker_id']:<10} {w['device']:<5} {w['node']:<16} {w['state']}{stage}")
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as http:
        body = _get_json(http, "/api/v1/ingestion/jobs/history", limit=args.limit)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    for job in body["jobs"]:
        detail = (
            job.get("error")
            or job.get("reason")
            or (f"{job['files_processed']} files, {job['edges']} edges")
        )
        print(
            f"{job['timestamp'][:19]}  {job['status']:<8} {job['duration_seconds']:>7.2f}s  "
            f"{job['repo_url']}  {detail}"
        )
    m = body["metrics"]
    print(
        f"success {m['success_rate']:.0%}  errors {m['error_rate']:.0%}  "
        f"skipped {m['skip_rate']:.0%}  mean {m['average_duration_s']:.2f}s  "
        f"{m['throughput_per_hour']:.0f}/h"
    )
    return 0


def cmd_similar(args: argparse.Namespace, settings: Settings) -> int:
    """Nearest files by vector: through the Qdrant server, or the running system's store actor."""
    repo = _source_ref(args.source, settings).url
    if settings.qdrant_url:
        from neo_ray.stores.vectors import VectorStore

        store = VectorStore.open(settings)
        try:
            found = {
                f: store.similar(repo, f, args.k, scope=args.scope, mode=args.mode)
                for f in args.files
            }
        finally:
            store.close()
    else:
        import ray

        _join_ray(settings)
        try:
            from neo_ray.edge.facades import Store

            keeper = Store()
            found = {
                f: keeper.similar(repo, f, args.k, scope=args.scope, mode=args.mode)
                for f in args.files
            }
        finally:
            ray.shutdown()
    for file, near in found.items():
        # Another repository's file is named with its repository (scope all).
        shown = ", ".join(
            f"{n.file_path if n.repo_url == repo else f'{n.repo_url}:{n.file_path}'} "
            f"({n.score:.2f})"
            for n in near
        )
        print(f"like {file}: {shown or 'no neighbours'}")
    return 0


# --- search and graph queries, through the HTTP routes ------------------------------------
def _repo_arg(source: str) -> str:
    """A repository as the routes take it: a local folder becomes its file:// URL."""
    path = Path(source).expanduser()
    return path.resolve().as_uri() if path.exists() else source


def _auth(settings: Settings) -> dict[str, str]:
    token = _token(settings)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _answer(reply: Any, path: str) -> dict[str, Any]:
    """A route's JSON body; a non-2xx answer becomes a NeoRayError with its detail."""
    try:
        body = reply.json()
    except ValueError:
        body = {"detail": reply.text[:200]}
    if reply.status_code >= 300:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        raise NeoRayError(f"HTTP {reply.status_code} from {path}: {detail}")
    return dict(body)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    path = "/api/v1/search/similar"
    params = {
        "repo_url": _repo_arg(args.source),
        "file_path": args.file,
        "limit": args.limit,
        "scope": args.scope,
    }
    if args.mode:
        params["mode"] = args.mode
    with _client(settings) as http:
        body = _answer(http.get(path, params=params, headers=_auth(settings)), path)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    q = body["query"]
    print(f"like {q['file_path']} ({q['language'] or '?'}) in {q['repo_url']}: {q['mode']}")
    for r in body["results"]:
        ev = r["evidence"]
        why = [f"distance {ev['graph_distance']}" if ev["graph_distance"] is not None else ""]
        if ev["shared_neighbors"]:
            count = len(ev["shared_neighbors"])
            why.append(f"{count} shared neighbour{'' if count == 1 else 's'}")
        if ev["common_imports"]:
            why.append("both import " + ", ".join(ev["common_imports"][:3]))
        where = "" if r["repo_url"] == q["repo_url"] else f"  [{r['repo_url']}]"
        print(f"  {r['score']:6.3f}  {r['file_path']}{where}  " + "; ".join(w for w in why if w))
    if not body["results"]:
        print("  no neighbours")
    return 0


def _print_groups(groups: list[dict[str, Any]]) -> None:
    for group in groups:
        print(f"depth {group['depth']} ({group['count']})")
        for f in group["files"]:
            via = "  via " + " → ".join(f["path"][1:-1]) if len(f["path"]) > 2 else ""
            print(f"  {f['file_path']}{via}")


def cmd_deps(args: argparse.Namespace, settings: Settings) -> int:
    direction = "dependents" if args.dependents else "dependencies"
    path = f"/api/v1/graph/{direction}"
    params = {"repo_url": _repo_arg(args.source), "file_path": args.file, "depth": args.depth}
    with _client(settings) as http:
        body = _answer(http.get(path, params=params, headers=_auth(settings)), path)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(
        f"{direction} of {body['file_path']} in {body['repo_url']} "
        f"(depth {body['depth']}): {body['total']} files"
    )
    _print_groups(body["by_depth"])
    return 0


def cmd_impact(args: argparse.Namespace, settings: Settings) -> int:
    files = list(args.files)
    if "-" in files:  # `git diff --name-only | neo-ray impact REPO -`
        files = [f for f in files if f != "-"]
        files += [line.strip() for line in sys.stdin if line.strip()]
    if not files:
        raise NeoRayError("no changed files given (as arguments, or on stdin with -)")
    path = "/api/v1/graph/impact"
    payload: dict[str, Any] = {"repo_url": _repo_arg(args.source), "files": files}
    if args.depth is not None:
        payload["depth"] = args.depth
    with _client(settings) as http:
        body = _answer(http.post(path, json=payload, headers=_auth(settings)), path)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(
        f"a change to {len(body['files'])} file(s) of {body['repo_url']} reaches "
        f"{body['total']} dependent file(s)"
    )
    if body["not_in_graph"]:
        print("not in the graph: " + ", ".join(body["not_in_graph"]))
    _print_groups(body["by_depth"])
    return 0


def _add_node2vec_args(p: argparse.ArgumentParser, s: Settings) -> None:
    p.add_argument("--dim", type=int, default=s.dim)
    p.add_argument("--walk-length", type=int, default=s.walk_length)
    p.add_argument("--context-size", type=int, default=s.context_size)
    p.add_argument("--walks-per-node", type=int, default=s.walks_per_node)
    p.add_argument("--p", type=float, default=s.p)
    p.add_argument("--q", type=float, default=s.q)
    p.add_argument("--epochs", type=int, default=s.epochs)
    p.add_argument("--seed", type=int, default=s.seed)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=s.device)


STRICT_HELP = (
    "parse every file fully with tree-sitter and leave out files with syntax errors "
    "(default: a lexical scan where it is sure, tree-sitter elsewhere; broken files stay)"
)


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    """The control plane as one plain ASGI process (uvicorn), no Ray: for a small host."""
    import uvicorn

    from neo_ray.config import check_deployment
    from neo_ray.control.asgi import create_app

    if args.host or args.port:
        update = {"http_host": args.host or settings.http_host}
        settings = settings.model_copy(
            update={**update, "http_port": args.port or settings.http_port}
        )
    check_deployment(settings)
    # neo-ray's own warnings (a refused token, with the client's address) go to stderr with a
    # time and a name; uvicorn keeps its own loggers.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
    )
    return 0


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neo-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("graph", help="print a repository's file-level import graph")
    g.add_argument("source", metavar="PATH_OR_URL")
    g.add_argument("--ref", default=None, help="branch or tag to clone")
    g.add_argument("--json", action="store_true", help="print the graph as JSON")
    g.add_argument("--strict", action="store_true", help=STRICT_HELP)
    g.set_defaults(func=cmd_graph)

    e = sub.add_parser("embed", help="train Node2Vec on an edge list (src<TAB>dst per line)")
    e.add_argument("edges", metavar="EDGES.tsv")
    e.add_argument("--out", required=True, metavar="EMB.npy")
    _add_node2vec_args(e, settings)
    e.set_defaults(func=cmd_embed)

    r = sub.add_parser("run", help="the whole pipeline in one process, vectors into the store")
    r.add_argument("source", metavar="PATH_OR_URL")
    r.add_argument("--ref", default=None, help="branch or tag to clone")
    r.add_argument(
        "--neighbors",
        type=int,
        default=0,
        metavar="N",
        help="then show the nearest files of the N most connected ones",
    )
    r.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    r.add_argument("--strict", action="store_true", help=STRICT_HELP)
    r.set_defaults(func=cmd_run)

    up = sub.add_parser("up", help="start Ray (if none runs), the services and the app")
    up.add_argument("--mode", choices=[m.value for m in Mode], default=None)
    up.set_defaults(func=cmd_up)
    tok = sub.add_parser(
        "ray-token", help="print the Ray auth token file nodes share (made when missing)"
    )
    tok.set_defaults(func=cmd_ray_token)
    api = sub.add_parser("api", help="the control plane as one plain ASGI process (no Ray)")
    api.add_argument("--host", default=None, help="bind address (NEO_HTTP_HOST)")
    api.add_argument("--port", type=int, default=None, help="port (NEO_HTTP_PORT)")
    api.set_defaults(func=cmd_api)
    down = sub.add_parser("down", help="stop exactly what `up` started")
    down.set_defaults(func=cmd_down)
    ing = sub.add_parser("ingest", help="submit a repository through the HTTP route")
    ing.add_argument("source", metavar="URL_OR_PATH")
    ing.add_argument("--ref", default=None)
    ing.add_argument("--wait", action="store_true", help="show progress until the job ends")
    ing.add_argument("--json", action="store_true", help="with --wait: print the record as JSON")
    ing.set_defaults(func=cmd_ingest)
    bk = sub.add_parser("bulk", help="submit every repository in FILE and follow them all")
    bk.add_argument("file", metavar="FILE", help="repository URLs, one a line ('-': stdin)")
    bk.add_argument("--no-progress", action="store_true", help="no progress bar")
    bk.set_defaults(func=cmd_bulk)
    st = sub.add_parser("status", help="workers and queue")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    hi = sub.add_parser("history", help="recent jobs and metrics")
    hi.add_argument("--limit", type=int, default=10)
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(func=cmd_history)
    sim = sub.add_parser("similar", help="files whose vectors are nearest to FILE's")
    sim.add_argument("source", metavar="URL_OR_PATH")
    sim.add_argument("files", nargs="+", metavar="FILE", help="repository-relative paths")
    sim.add_argument("-k", type=int, default=5)
    sim.add_argument(
        "--scope", choices=["repo", "all"], default="repo", help="this repository, or all"
    )
    sim.add_argument(
        "--mode",
        choices=["structural", "lexical", "hybrid"],
        default="structural",
        help="Node2Vec vectors, BM25 of identifiers and paths, or both fused (RRF)",
    )
    sim.set_defaults(func=cmd_similar)
    _add_query_commands(sub)
    return parser


def _locate_system(args: argparse.Namespace, settings: Settings) -> Settings:
    """Commands that reach a running system find the data dir `up` recorded (from any
    directory), unless NEO_DATA_DIR names one; `up` itself makes the data dir absolute."""
    from neo_ray import raycluster

    if args.func is cmd_up or "NEO_DATA_DIR" in os.environ:
        return load_settings(data_dir=settings.data_dir.resolve())
    recorded = raycluster.recorded_data_dir()
    return load_settings(data_dir=(recorded or settings.data_dir).resolve())


def _stop_parse_pool() -> None:
    """Stop the parse pool, if the command started one: nothing outlives the command."""
    parallel = sys.modules.get("neo_ray.pipeline.parallel")
    if parallel is not None:
        parallel.shutdown()


def _add_query_commands(sub: Any) -> None:
    """`search`, `deps` and `impact`: the running system's routes, text or --json."""
    se = sub.add_parser("search", help="files like FILE, with evidence from the import graph")
    se.add_argument("source", metavar="URL_OR_PATH", help="the repository, as ingested")
    se.add_argument("file", metavar="FILE", help="repository-relative path")
    se.add_argument("--limit", type=int, default=10)
    se.add_argument("--scope", choices=["repo", "all"], default="repo")
    se.add_argument("--mode", choices=["structural", "lexical", "hybrid"], default=None)
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_search)
    de = sub.add_parser("deps", help="what FILE imports (or, --dependents, what imports it)")
    de.add_argument("source", metavar="URL_OR_PATH")
    de.add_argument("file", metavar="FILE")
    de.add_argument("--depth", type=int, default=1, help="levels to follow (1..10)")
    de.add_argument("--dependents", action="store_true", help="the files that import FILE")
    de.add_argument("--json", action="store_true")
    de.set_defaults(func=cmd_deps)
    im = sub.add_parser("impact", help="every file that depends on the changed FILES")
    im.add_argument("source", metavar="URL_OR_PATH")
    im.add_argument(
        "files", nargs="+", metavar="FILE", help="changed files; - reads them from stdin"
    )
    im.add_argument("--depth", type=int, default=None, help="stop this many levels out")
    im.add_argument("--json", action="store_true")
    im.set_defaults(func=cmd_impact)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings()
        args = build_parser(settings).parse_args(argv)
        settings = _locate_system(args, settings)
        if args.func is cmd_up:
            # Refuse a mode missing its shared settings before anything is made on disk.
            mode = Mode(args.mode) if args.mode else settings.mode
            check_deployment(settings.with_(mode=mode))
        if args.func in (cmd_up, cmd_down, cmd_similar):
            from neo_ray import raycluster

            # Before anything imports ray: Ray reads its auth settings once, at import, and
            # whether a node address of 127.0.0.1 stays one.
            raycluster.use_auth_token(settings.data_dir, create=args.func is cmd_up)
            starting = args.func is cmd_up and _loopback_head(
                Mode(args.mode) if args.mode else settings.mode
            )
            raycluster.use_loopback(settings.data_dir, starting=starting)
        func: Callable[[argparse.Namespace, Settings], int] = args.func
        try:
            return func(args, settings)
        finally:
            _stop_parse_pool()
    except NeoRayError as exc:
        print(f"neo-ray: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("neo-ray: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `neo-ray graph --json | head`
        # What stays buffered for the closed pipe goes nowhere, not to a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        # httpx loads only with the commands that speak HTTP; `neo-ray graph` never pays it.
        httpx = sys.modules.get("httpx")
        if httpx is None or not isinstance(exc, httpx.TransportError):
            raise
        where = exc.request.url if exc.request else "the control plane"
        print(
            f"neo-ray: error: cannot reach {where} ({exc}); is it running? start it with "
            "`neo-ray up`",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
