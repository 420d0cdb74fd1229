"""Node2Vec of our own: walks follow edges, second-order statistics are exact, training works."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from neo_ray.errors import EmbedError
from neo_ray.models import Node2VecParams, Progress, Stage
from neo_ray.pipeline import embed
from neo_ray.pipeline.embed import (
    Node2Vec,
    load_edge_tsv,
    random_walks,
    resolve_device,
    train_node2vec,
    undirected_csr,
)

HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA")]
    ),
]

# Upper 1e-6 tail of the chi-square distribution with 5 degrees of freedom
# (scipy.stats.chi2.isf(1e-6, 5)): a correct sampler fails the test once in a million runs.
CHI2_DF5_CRITICAL = 35.89


def csr(
    edges: list[tuple[int, int]], num_nodes: int, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    tensor = torch.tensor(edges, dtype=torch.int64, device=device).reshape(-1, 2)
    return undirected_csr(tensor, num_nodes)


def generator(device: str, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def random_graph(num_nodes: int, num_edges: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_nodes, size=(num_edges, 2))


# --------------------------------------------------------------------------- walks


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p, q", [(1.0, 1.0), (0.5, 2.0), (4.0, 0.25)])
def test_every_walk_step_follows_an_edge(device: str, p: float, q: float) -> None:
    # Nodes 40..44 are isolated: their walks must stay put.
    edges = random_graph(40, 120, seed=1)
    rowptr, col = undirected_csr(torch.from_numpy(edges).to(device), 45)
    adjacency = {(int(a), int(b)) for a, b in edges if a != b}
    adjacency |= {(b, a) for a, b in adjacency}
    starts = torch.arange(45, device=device).repeat(20)

    walks = random_walks(rowptr, col, starts, 12, p, q, generator(device)).cpu()

    assert walks.shape == (45 * 20, 13)
    assert torch.equal(walks[:, 0], starts.cpu())
    for walk in walks.tolist():
        for a, b in itertools.pairwise(walk):
            assert (a, b) in adjacency or (a == b and a >= 40), (a, b)


@pytest.mark.parametrize("p, q", [(1.0, 1.0), (0.5, 2.0)])
def test_walks_shared_among_threads_follow_edges_from_their_starts(p: float, q: float) -> None:
    edges = random_graph(40, 120, seed=2)
    rowptr, col = undirected_csr(torch.from_numpy(edges), 40)
    model = Node2Vec(rowptr, col, 8, walk_length=6, context_size=3, walks_per_node=4, p=p, q=q)
    model.workers = embed._Workers(3)
    batch = torch.tensor([5, 0, 39, 7, 7, 12, 3])
    adjacency = {(int(a), int(b)) for a, b in edges if a != b}
    adjacency |= {(b, a) for a, b in adjacency}

    walks = model.pos_sample(batch, generator("cpu"))
    model.workers.close()

    assert torch.equal(walks[:, 0], batch.repeat_interleave(4))
    for walk in walks.tolist():
        assert all(pair in adjacency for pair in itertools.pairwise(walk)), walk


def test_csr_is_undirected_deduplicated_sorted_and_loop_free() -> None:
    rowptr, col = csr([(0, 2), (2, 0), (0, 1), (1, 1), (0, 2), (3, 1)], 5)

    rows = [col[rowptr[i] : rowptr[i + 1]].tolist() for i in range(5)]

    assert rows == [[1, 2], [0, 3], [0], [1], []]


# The pair studied: the walk came from t = 0 to v = 1. v's neighbours: 0 (return), 2 and 3
# (also neighbours of t), 4, 5, 6 (two steps from t). t has one more neighbour, 7, so a quarter
# of the walks from t step to v.
TRANSITION_EDGES = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (0, 7)]
TRANSITION_TARGETS = [0, 2, 3, 4, 5, 6]


def node2vec_probabilities(p: float, q: float) -> np.ndarray:
    """node2vec's exact distribution of the next node after t = 0 → v = 1."""
    alpha = np.array([1 / p, 1, 1, 1 / q, 1 / q, 1 / q])
    return alpha / alpha.sum()


def observed_counts(p: float, q: float, device: str, samples: int = 240_000) -> np.ndarray:
    rowptr, col = csr(TRANSITION_EDGES, 9, device)
    starts = torch.zeros(samples, dtype=torch.int64, device=device)
    walks = random_walks(rowptr, col, starts, 2, p, q, generator(device, seed=7)).cpu()
    after_v = walks[walks[:, 1] == 1, 2]
    return np.array([(after_v == x).sum().item() for x in TRANSITION_TARGETS], dtype=float)


def chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dense_adjacency", [True, False], ids=["bitmap", "searchsorted"])
@pytest.mark.parametrize("p, q", [(1.0, 1.0), (0.5, 2.0), (2.0, 0.5), (4.0, 0.25)])
def test_second_order_transitions_match_node2vec(
    device: str, dense_adjacency: bool, p: float, q: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both ways of asking "is x a neighbour of t" must give the same, exact distribution.
    monkeypatch.setattr(embed, "DENSE_ADJACENCY_MAX_NODES", 4096 if dense_adjacency else 0)

    counts = observed_counts(p, q, device)

    # About 60,000 transitions out of (t, v), each target seen thousands of times.
    assert counts.sum() > 55_000
    assert chi_square(counts, node2vec_probabilities(p, q)) < CHI2_DF5_CRITICAL


@pytest.mark.parametrize("p, q", [(0.5, 2.0), (2.0, 0.5), (4.0, 0.25)])
def test_the_transition_check_rejects_a_first_order_walk(p: float, q: float) -> None:
    # The test above has the power to see p and q ignored: a uniform (first-order) walk's
    # transitions fail it by far.
    first_order = observed_counts(1.0, 1.0, "cpu")

    assert chi_square(first_order, node2vec_probabilities(p, q)) > 100 * CHI2_DF5_CRITICAL


def test_walks_from_isolated_nodes_stay_put() -> None:
    rowptr, col = csr([(0, 1)], 3)
    starts = torch.tensor([2, 0, 2])

    walks = random_walks(rowptr, col, starts, 4, 0.5, 2.0, generator("cpu"))

    assert walks[0].tolist() == [2] * 5
    assert walks[2].tolist() == [2] * 5
    assert walks[1].tolist() == [0, 1, 0, 1, 0]


# --------------------------------------------------------------------------- the loss


def pyg_loss(weight: torch.Tensor, pos_rw: torch.Tensor, neg_rw: torch.Tensor, context: int):
    """PyG's Node2Vec.loss, written as PyG writes it: materialised windows, plain autograd."""

    def windows(rw: torch.Tensor) -> torch.Tensor:
        count = rw.shape[1] + 1 - context
        return torch.cat([rw[:, j : j + context] for j in range(count)])

    def scores(rw: torch.Tensor) -> torch.Tensor:
        start, rest = rw[:, 0], rw[:, 1:]
        return (weight[start].unsqueeze(1) * weight[rest]).sum(-1).view(-1)

    pos, neg = scores(windows(pos_rw)), scores(windows(neg_rw))
    pos_loss = -torch.log(torch.sigmoid(pos) + 1e-15).mean()
    neg_loss = -torch.log(1 - torch.sigmoid(neg) + 1e-15).mean()
    return pos_loss + neg_loss


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize(
    "num_nodes, chunk, workers",
    [(30, 512, 1), (30, 4, 1), (30, 4, 3), (2000, 4, 2)],
    ids=["dense-table", "chunked", "threads", "distinct-rows"],
)
def test_fused_loss_and_gradient_equal_pygs(
    dtype: torch.dtype,
    tolerance: float,
    num_nodes: int,
    chunk: int,
    workers: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small graphs accumulate gradients in a table of every node, graphs larger than the batch
    # among the batch's distinct nodes; walks are scored `chunk` at a time by `workers` threads.
    monkeypatch.setattr(embed, "CHUNK_WALKS", chunk)
    edges = torch.from_numpy(random_graph(num_nodes, 3 * num_nodes, seed=3))
    rowptr, col = undirected_csr(edges, num_nodes)
    model = Node2Vec(rowptr, col, 16, walk_length=8, context_size=4, walks_per_node=3)
    model.compute_dtype = dtype
    model.workers = embed._Workers(workers)
    gen = generator("cpu")
    model.reset_parameters(gen)
    with torch.no_grad():
        # Scores of a unit or two: the sigmoid's curved part, where PyG's own float32 gradient
        # (through log(σ + EPS)) is still exact to compare against.
        model.embedding.weight.mul_(4)
    batch = torch.tensor([0, 5, 9, 17, 29])
    pos_rw, neg_rw = model.pos_sample(batch, gen), model.neg_sample(batch, gen)

    loss = model.loss(pos_rw, neg_rw)
    loss.backward()
    model.workers.close()
    reference_weight = model.embedding.weight.detach().clone().requires_grad_(True)
    reference = pyg_loss(reference_weight, pos_rw, neg_rw, context=4)
    reference.backward()

    grad = model.embedding.weight.grad
    assert grad is not None and grad.is_sparse
    assert reference_weight.grad is not None
    assert loss.item() == pytest.approx(reference.item(), rel=tolerance)
    expected = reference_weight.grad
    error = (grad.to_dense() - expected).norm() / expected.norm()
    assert error < tolerance
    # Only the rows the walks touched carry a gradient (what SparseAdam relies on).
    touched = torch.unique(torch.cat([pos_rw, neg_rw]))
    assert torch.equal(grad.coalesce().indices()[0], touched)


# --------------------------------------------------------------------------- training


def two_communities() -> tuple[np.ndarray, int]:
    """Two 10-cliques joined by the single edge 0-10."""
    first = [(a, b) for a in range(10) for b in range(a + 1, 10)]
    second = [(a + 10, b + 10) for a, b in first]
    return np.array([*first, *second, (0, 10)]), 20


def mean_cosines(vectors: np.ndarray) -> tuple[float, float]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit.T
    community = np.arange(20) // 10
    same = community[:, None] == community[None, :]
    off_diagonal = ~np.eye(20, dtype=bool)
    return float(cosine[same & off_diagonal].mean()), float(cosine[~same].mean())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p, q", [(1.0, 1.0), (0.5, 2.0)])
def test_communities_are_closer_inside_than_across(device: str, p: float, q: float) -> None:
    edges, num_nodes = two_communities()
    params = Node2VecParams(dim=16, walk_length=10, context_size=5, p=p, q=q, epochs=5)

    vectors = train_node2vec(edges, num_nodes, params, device=device)

    within, across = mean_cosines(vectors)
    assert vectors.shape == (20, 16) and vectors.dtype == np.float32
    assert within > across + 0.5, (within, across)


@pytest.mark.parametrize("device", DEVICES)
def test_a_seed_reproduces_the_vectors(device: str) -> None:
    edges = random_graph(60, 150, seed=5)
    params = Node2VecParams(dim=8, walk_length=6, context_size=3, p=0.5, q=2.0, epochs=2)

    first = train_node2vec(edges, 60, params, device=device)
    again = train_node2vec(edges, 60, params, device=device)
    other = train_node2vec(edges, 60, replace(params, seed=1), device=device)

    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_progress_reports_every_epoch_and_threads_are_restored() -> None:
    heard: list[Progress] = []
    params = Node2VecParams(dim=4, walk_length=4, context_size=2, epochs=3)
    threads = torch.get_num_threads()

    train_node2vec(np.array([[0, 1], [1, 2]]), 3, params, progress=heard.append)

    assert [(p.stage, p.done, p.total) for p in heard] == [
        (Stage.TRAINING, e, 3) for e in (1, 2, 3)
    ]
    # Training runs torch ops on one thread each in its own workers, then gives them back.
    assert torch.get_num_threads() == threads


def test_no_nodes_give_an_empty_array() -> None:
    vectors = train_node2vec(np.zeros((0, 2), dtype=np.int64), 0, Node2VecParams(dim=12))

    assert vectors.shape == (0, 12) and vectors.dtype == np.float32


def test_isolated_nodes_get_rows() -> None:
    # Nodes 3 and 4 have no edges at all; node 5 only a self-loop (dropped).
    edges = np.array([[0, 1], [1, 2], [5, 5]])
    params = Node2VecParams(dim=8, walk_length=5, context_size=3, epochs=2)

    vectors = train_node2vec(edges, 6, params)

    assert vectors.shape == (6, 8)
    assert np.isfinite(vectors).all()
    assert (np.linalg.norm(vectors[3:], axis=1) > 0).all()


@pytest.mark.parametrize(
    "edges, num_nodes, params, message",
    [
        (np.array([[0, 3]]), 3, Node2VecParams(), "0..2"),
        (np.array([[0, -1]]), 3, Node2VecParams(), "0..2"),
        (np.array([0, 1, 2]), 3, Node2VecParams(), "(E, 2)"),
        (np.array([[0.0, 1.0]]), 3, Node2VecParams(), "integer"),
        (np.array([[0, 1]]), -1, Node2VecParams(), "num_nodes"),
        (np.array([[0, 1]]), 2, Node2VecParams(p=0.0), "p must"),
        (np.array([[0, 1]]), 2, Node2VecParams(q=float("nan")), "q must"),
        (np.array([[0, 1]]), 2, Node2VecParams(walk_length=4, context_size=6), "context_size"),
        (np.array([[0, 1]]), 2, Node2VecParams(dim=0), "dim"),
    ],
)
def test_bad_input_is_refused(
    edges: np.ndarray, num_nodes: int, params: Node2VecParams, message: str
) -> None:
    with pytest.raises(EmbedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_node2vec(edges, num_nodes, params)


# --------------------------------------------------------------------------- devices and files


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    with pytest.raises(EmbedError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(EmbedError, match="no CUDA device"):
        resolve_device("cuda")


def test_load_edge_tsv_reads_pairs_skipping_comments_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "edges.tsv"
    path.write_text("# src\tdst\n0\t1\n\n1\t4\n  # indented comment\n3\t3\n")

    edges, num_nodes = load_edge_tsv(path)

    assert edges.tolist() == [[0, 1], [1, 4], [3, 3]]
    assert edges.dtype == np.int64
    assert num_nodes == 5


def test_load_edge_tsv_of_an_empty_file_has_no_nodes(tmp_path: Path) -> None:
    path = tmp_path / "edges.tsv"
    path.write_text("# nothing\n")

    edges, num_nodes = load_edge_tsv(path)

    assert edges.shape == (0, 2) and num_nodes == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("0\t1\n1\t2\n2\tx\n", ":3: node ids must be integers"),
        ("0\t1\n1\n", ":2: expected"),
        ("0\t1\t2\n", ":1: expected"),
        ("0\t1\n\n4\t-2\n", ":3: node ids must be >= 0"),
    ],
)
def test_load_edge_tsv_names_the_bad_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "edges.tsv"
    path.write_text(text)

    with pytest.raises(EmbedError, match=message):
        load_edge_tsv(path)


def test_load_edge_tsv_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EmbedError, match="cannot read"):
        load_edge_tsv(tmp_path / "absent.tsv")
