"""The `neo-ray` command line: pipeline commands (graph, embed, run) and the system's controls."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neo_ray.config import Settings, load_settings
from neo_ray.errors import NeoRayError
from neo_ray.models import Progress, RepoGraph

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
    from neo_ray import pipeline

    path = Path(source).expanduser()
    if path.exists():
        return pipeline.local_path_ref(path)
    if source.startswith("file://"):
        return pipeline.resolve_source(source, settings, allow_local=True)
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


def cmd_graph(args: argparse.Namespace, settings: Settings) -> int:
    from neo_ray import pipeline

    bars = ProgressBars(enabled=not args.json and sys.stderr.isatty())
    try:
        graph = pipeline.graph_of(
            _source_ref(args.source, settings), settings, git_ref=args.ref, progress=bars
        )
    finally:
        bars.close()
    if args.json:
        json.dump(graph.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(_graph_summary(graph))
    return 0


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from neo_ray import embed
    from neo_ray.models import Node2VecParams

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
    from neo_ray import pipeline
    from neo_ray.store import VectorStore

    ref = _source_ref(args.source, settings)
    store = VectorStore.open(settings)
    bars = ProgressBars()
    try:
        result = pipeline.run_pipeline(ref, settings, store, git_ref=args.ref, progress=bars)
        bars.close()
        print(_graph_summary(result.graph))
        print(
            f"vectors     {result.embeddings} in '{settings.qdrant_collection}' "
            f"({settings.qdrant_url or settings.data_dir / 'qdrant'})"
        )
        print(f"device      {result.device}")
        print("seconds     " + ", ".join(f"{k} {v:.2f}" for k, v in result.stage_seconds.items()))
        if args.neighbors:
            _print_neighbours(store, result.graph, args.neighbors)
    finally:
        bars.close()
        store.close()
    return 0


def _print_neighbours(store: Any, graph: RepoGraph, count: int) -> None:
    """The structurally nearest files of the most-connected files."""
    ins, outs = graph.degrees()
    hubs = sorted(ins, key=lambda p: (-(ins[p] + outs[p]), p))[:count]
    for path in hubs:
        near = store.similar(graph.repo, path, k=3)
        shown = ", ".join(f"{n.file_path} ({n.score:.2f})" for n in near)
        print(f"like {path}: {shown}")


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


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neo-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("graph", help="print a repository's file-level import graph")
    g.add_argument("source", metavar="PATH_OR_URL")
    g.add_argument("--ref", default=None, help="branch or tag to clone")
    g.add_argument("--json", action="store_true", help="print the graph as JSON")
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
    r.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings()
        args = build_parser(settings).parse_args(argv)
        func: Callable[[argparse.Namespace, Settings], int] = args.func
        return func(args, settings)
    except NeoRayError as exc:
        print(f"neo-ray: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("neo-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
