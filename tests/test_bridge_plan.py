"""Which GraphWorkers the bridge plans for the live nodes, and the cluster's identity."""

from __future__ import annotations

from neo_ray.config import Settings
from neo_ray.edge.bridge import cluster_identity, plan_workers


def node(node_id: str, alive: bool = True, **resources: float) -> dict[str, object]:
    return {"NodeID": node_id, "Alive": alive, "Resources": resources}


def test_one_worker_per_gpu_and_workers_per_node_on_cpu_edge_nodes() -> None:
    nodes = [
        node("h" * 40, CPU=2, **{"node:__internal_head__": 1}),  # no edge: no workers
        node("g" * 40, CPU=1, GPU=2, edge=1),
        node("c" * 40, CPU=4, edge=1),
        node("d" * 40, alive=False, CPU=4, edge=1),  # gone
    ]
    plans = plan_workers(nodes, Settings(workers_per_node=3))
    by_node: dict[str, list[dict[str, object]]] = {}
    for plan in plans:
        assert plan.name.startswith("worker-" + plan.node_id[:12])
        by_node.setdefault(plan.node_id[0], []).append(plan.options)
    assert by_node == {
        "g": [{"num_gpus": 1, "num_cpus": 0}] * 2,
        "c": [{"num_cpus": 1}] * 3,
    }
    assert len({p.name for p in plans}) == 5


def test_without_edge_nodes_every_live_node_works() -> None:
    plans = plan_workers([node("a" * 40, CPU=2)], Settings())
    assert [(p.node_id[0], p.options) for p in plans] == [("a", {"num_cpus": 1})]


def test_the_cluster_is_named_by_its_head_node() -> None:
    nodes = [node("b" * 40, edge=1), node("a" * 40, **{"node:__internal_head__": 1})]
    assert cluster_identity(nodes) == "a" * 16
    assert cluster_identity(list(reversed(nodes))) == "a" * 16
