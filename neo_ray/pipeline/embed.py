"""Node2Vec of our own: second-order biased random walks and skip-gram training in plain torch.

PyG's `Node2Vec` needs pyg-lib (not on PyPI) and its walk kernels refuse p != 1 or q != 1, so
the walks and the training live here, on CSR tensors, with the same code on CPU and CUDA. This is
the one module of neo-ray that imports torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from neo_ray.errors import EmbedError
from neo_ray.models import Node2VecParams, Progress, Stage

BATCH_SIZE = 512
"""Start nodes per optimizer step (each with `walks_per_node` walks, and as many negatives).
PyG's examples take 128 with lr 0.01. Measured on ray's import graph (2,356 nodes) and on its
subpackages (120 to 400 nodes): 512 with the rate below trains as well as 128 or 256 (within
0.001 AUC on the large graph, better on the 400-node one) in fewer, cheaper steps; the loss
works through a batch in chunks (CHUNK_WALKS), so a large batch costs no cache misses."""

LEARNING_RATE = 0.05
"""SparseAdam's learning rate for the batch size above (0.025 to 0.1 measured within 0.005 AUC
of each other; PyG's 0.01 needs many more epochs from our start)."""

INIT_STD = 0.1
"""Standard deviation of the initial vectors. nn.Embedding's N(0, 1) starts 64-dimensional dot
products near ±8, deep in the sigmoid's flat tails; small vectors start in its linear part and
train in fewer steps (word2vec starts small too)."""


def resolve_device(choice: str) -> str:
    """The torch device for a `--device` choice: "auto" → "cuda" when there is one, else "cpu"."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise EmbedError(
                f"device {choice!r} was asked for but torch sees no CUDA device "
                f"(torch {torch.__version__}); use 'cpu' or 'auto'"
            )
        return choice
    raise EmbedError(f"unknown device {choice!r}: expected 'auto', 'cpu' or 'cuda'")


def warm_up() -> None:
    """Pay torch's one-time costs now (the first optimizer pulls in torch._dynamo, about 1 s),
    so that a long-lived worker does not pay them inside its first job."""
    torch.optim.SparseAdam([torch.nn.Parameter(torch.zeros(1, 1))], lr=LEARNING_RATE)


def describe_device(device: str) -> str:
    """A human name for a resolved device: "cpu (2 threads)", "cuda:0 (NVIDIA H100 ...)"."""
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        index = torch_device.index if torch_device.index is not None else 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def load_edge_tsv(path: Path) -> tuple[np.ndarray, int]:
    """Read `src<TAB>dst` integer pairs (ids 0..N-1); return the (E, 2) edges and N = max id + 1.

    Blank lines and lines starting with `#` are ignored; any other whitespace between the two ids
    is accepted too. A malformed line or a negative id raises EmbedError naming the line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EmbedError(f"cannot read edge list {path}: {exc}") from exc
    pairs: list[tuple[int, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pairs.append(_parse_edge_line(line, number, path))
    edges = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    num_nodes = int(edges.max()) + 1 if edges.size else 0
    return edges, num_nodes


def _parse_edge_line(line: str, number: int, path: Path) -> tuple[int, int]:
    fields = line.split()
    if len(fields) != 2:
        raise EmbedError(f"{path}:{number}: expected 'src<TAB>dst', got {line!r}")
    try:
        src, dst = int(fields[0]), int(fields[1])
    except ValueError:
        raise EmbedError(f"{path}:{number}: node ids must be integers, got {line!r}") from None
    if src < 0 or dst < 0:
        raise EmbedError(f"{path}:{number}: node ids must be >= 0, got {line!r}")
    if max(src, dst) >= MAX_NODES:
        raise EmbedError(
            f"{path}:{number}: node id {max(src, dst)} is too large (ids are 0..N-1, "
            f"N at most {MAX_NODES:,})"
        )
    return src, dst


MAX_NODES = 100_000_000
"""The largest graph `load_edge_tsv` accepts (64-dim vectors for it take 25.6 GB): an id past
it is a typo or a hostile file, not a graph to allocate for."""


# --------------------------------------------------------------------------- graph

DENSE_ADJACENCY_MAX_NODES = 4096
"""Up to this many nodes, "is x a neighbour of t" reads a dense N × N boolean table (16 MiB at
most, one gather per query); above it, a binary search in the sorted edge keys."""


def undirected_csr(edges: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """CSR (rowptr, col) of the undirected simple graph: both directions, no duplicates, no
    self-loops, each row's neighbours sorted ascending."""
    edges = edges.to(torch.int64).reshape(-1, 2)
    edges = edges[edges[:, 0] != edges[:, 1]]
    src = torch.cat([edges[:, 0], edges[:, 1]])
    dst = torch.cat([edges[:, 1], edges[:, 0]])
    # One sorted key per directed edge orders rows, then neighbours within a row.
    keys = torch.unique(src * num_nodes + dst)
    src, col = keys // num_nodes, keys % num_nodes
    counts = torch.bincount(src, minlength=num_nodes)
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64, device=edges.device)
    rowptr[1:] = torch.cumsum(counts, 0)
    return rowptr, col


class _WalkGraph:
    """What the walks read: CSR, degrees, and an edge-membership test for second-order steps."""

    def __init__(self, rowptr: Tensor, col: Tensor, second_order: bool) -> None:
        self.num_nodes = rowptr.numel() - 1
        self.rowptr, self.col = rowptr, col
        self.deg = rowptr[1:] - rowptr[:-1]
        self.deg_float = self.deg.to(torch.float32)
        self.keys: Tensor | None = None
        self.adjacency: Tensor | None = None
        if second_order:
            src = torch.repeat_interleave(torch.arange(self.num_nodes, device=col.device), self.deg)
            # Sorted because CSR rows are in order and each row's neighbours are sorted.
            self.keys = src * self.num_nodes + col
            if self.num_nodes <= DENSE_ADJACENCY_MAX_NODES:
                self.adjacency = torch.zeros(
                    self.num_nodes * self.num_nodes, dtype=torch.bool, device=col.device
                )
                self.adjacency[self.keys] = True

    def has_edge(self, src: Tensor, dst: Tensor) -> Tensor:
        """Whether each (src, dst) is an edge."""
        query = src * self.num_nodes + dst
        if self.adjacency is not None:
            return _take(self.adjacency, query)
        if self.keys is None:
            raise EmbedError("edge tests need a graph built for second-order walks")
        pos = torch.searchsorted(self.keys, query).clamp_max(self.keys.numel() - 1)
        return _take(self.keys, pos) == query


# --------------------------------------------------------------------------- walks


def random_walks(
    rowptr: Tensor,
    col: Tensor,
    starts: Tensor,
    walk_length: int,
    p: float,
    q: float,
    generator: torch.Generator,
) -> Tensor:
    """Node2vec walks from `starts`: a (len(starts), walk_length + 1) tensor, column 0 the start.

    The CSR must be undirected with each row's neighbours sorted, as `undirected_csr` builds
    it. All walks advance one step together. p = q = 1 takes the first-order uniform walk;
    otherwise each step samples node2vec's second-order distribution exactly, by rejection
    (KnightKing, PecanPy). A walk from a node without neighbours stays there, as PyG's padding
    does.
    """
    graph = _WalkGraph(rowptr, col, second_order=p != 1.0 or q != 1.0)
    return _walks(graph, starts, walk_length, p, q, generator)


def _walks(
    graph: _WalkGraph,
    starts: Tensor,
    walk_length: int,
    p: float,
    q: float,
    generator: torch.Generator,
) -> Tensor:
    starts = starts.to(torch.int64)
    # In an undirected graph only a walk that starts on an isolated node ever meets one.
    moving = torch.nonzero(_take(graph.deg, starts) > 0).flatten()
    if moving.numel() == starts.numel():
        return _moving_walks(graph, starts, walk_length, p, q, generator)
    walks = starts.unsqueeze(1).repeat(1, walk_length + 1)
    walks[moving] = _moving_walks(graph, starts[moving], walk_length, p, q, generator)
    return walks


def _moving_walks(
    graph: _WalkGraph,
    starts: Tensor,
    walk_length: int,
    p: float,
    q: float,
    generator: torch.Generator,
) -> Tensor:
    """Walks from nodes that all have neighbours; one contiguous tensor per step, stacked."""
    steps = [starts]
    if walk_length >= 1 and starts.numel() > 0:
        steps.append(_uniform_step(graph, starts, generator))
    for _ in range(2, walk_length + 1):
        if p == 1.0 and q == 1.0:
            steps.append(_uniform_step(graph, steps[-1], generator))
        else:
            steps.append(_biased_step(graph, steps[-2], steps[-1], p, q, generator))
    if len(steps) < walk_length + 1:  # no walkers: keep the shape
        return starts.new_empty(0, walk_length + 1)
    return torch.stack(steps, dim=1)


MAX_DRAWS = 32
"""Most proposals a rejected walker draws in one round of a second-order step."""


def _take(values: Tensor, index: Tensor) -> Tensor:
    """values[index] for a 1-D `values`: index_select is several times faster than indexing."""
    return values.index_select(0, index.reshape(-1)).view(index.shape)


def _neighbour_at(graph: _WalkGraph, cur: Tensor, r: Tensor) -> Tensor:
    """The neighbour of `cur` at uniform position floor(r * degree) (every degree >= 1);
    `r` may carry more columns than `cur` (several draws per walker)."""
    if r.dim() > cur.dim():
        cur = cur.unsqueeze(-1)
    deg = _take(graph.deg, cur)
    # r < 1; the clamp only guards float32 rounding for huge degrees.
    offset = torch.minimum((r * _take(graph.deg_float, cur)).to(torch.int64), deg - 1)
    return _take(graph.col, _take(graph.rowptr, cur) + offset)


def _uniform_step(graph: _WalkGraph, cur: Tensor, generator: torch.Generator) -> Tensor:
    """One uniform neighbour of each node in `cur` (all have neighbours)."""
    r = torch.rand(cur.shape, generator=generator, device=cur.device)
    return _neighbour_at(graph, cur, r)


def _biased_step(
    graph: _WalkGraph,
    prev: Tensor,
    cur: Tensor,
    p: float,
    q: float,
    generator: torch.Generator,
) -> Tensor:
    """One second-order step from `cur` having come from `prev`, by rejection sampling.

    Node2vec weighs a neighbour x of v (having come from t) by α = 1/p if x == t, 1 if x is a
    neighbour of t, 1/q otherwise. The envelope is uniform at height m = max(1, 1/q) over v's
    neighbours; when 1/p > m, the return edge's excess 1/p - m is an "outlier" proposed
    directly (KnightKing's folding), so a small p does not drag every acceptance down.

    A walker takes its first accepted proposal. Rejected walkers try again, and as they grow
    few each draws several proposals per round, so a step takes a handful of rounds.
    """
    walkers = cur.numel()
    out: Tensor | None = None
    todo = torch.arange(walkers, device=cur.device)
    t, v, draws = prev, cur, 1
    while True:
        x, accept = _proposals(graph, t, v, p, q, draws, generator)
        if draws > 1:
            # Walker by walker, the first accepted of its draws.
            first = accept.to(torch.uint8).argmax(dim=1, keepdim=True)
            x, accept = x.gather(1, first).squeeze(1), accept.any(dim=1)
        # Rejected walkers' entries are overwritten in a later round.
        if out is None:
            out = x
        else:
            out[todo] = x
        rejected = torch.nonzero(~accept).flatten()
        if rejected.numel() == 0:
            return out
        todo, t, v = (_take(a, rejected) for a in (todo, t, v))
        draws = min(MAX_DRAWS, max(1, walkers // rejected.numel()))


def _proposals(
    graph: _WalkGraph,
    t: Tensor,
    v: Tensor,
    p: float,
    q: float,
    draws: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """`draws` independent proposals per walker (v, coming from t), and which are accepted."""
    height = max(1.0, 1.0 / q)
    excess = max(0.0, 1.0 / p - height)
    uniforms = 3 if excess > 0.0 else 2
    shape = (uniforms, t.numel(), draws) if draws > 1 else (uniforms, t.numel())
    r = torch.rand(shape, generator=generator, device=t.device)
    if draws > 1:
        t, v = t.unsqueeze(1), v.unsqueeze(1)
    x = _neighbour_at(graph, v, r[0])
    threshold = torch.where(graph.has_edge(t, x), 1.0 / height, 1.0 / (q * height))
    threshold.masked_fill_(x == t, min(1.0 / p, height) / height)
    accept = r[1] < threshold
    if excess > 0.0:
        # With probability excess / (deg(v) * height + excess) propose t outright.
        outlier = r[2] * (_take(graph.deg_float, v) * height + excess) < excess
        x = torch.where(outlier, t, x)
        accept |= outlier
    return x, accept


# --------------------------------------------------------------------------- model


CHUNK_WALKS = 512
"""Walks scored per batched matmul inside the loss. Chunks keep every temporary a few MiB:
they stay in the CPU caches, and the allocator reuses them instead of mapping fresh pages for
each batch (page faults cost more than the arithmetic here)."""


class _Workers:
    """Threads that share a loss's chunks, for a CPU: worker j takes chunks j, j + n, ...

    Each torch op of a chunk is small, so torch's own intra-op threads mostly wait on each other
    (and stall whenever another process holds a core); whole chunks on separate threads keep
    every core busy instead. torch ops release the GIL. Results come back in worker order and
    the chunks a worker takes are fixed, so for a given number of workers the sums, and a
    seeded run, are reproducible."""

    def __init__(self, count: int) -> None:
        self.count = max(1, count)
        self._pool = ThreadPoolExecutor(self.count, "node2vec") if self.count > 1 else None

    def map(self, job: Callable[[int], Tensor]) -> list[Tensor]:
        """[job(0), ..., job(count - 1)], run side by side."""
        if self._pool is None:
            return [job(0)]
        return list(self._pool.map(job, range(self.count)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


_SEQUENTIAL = _Workers(1)


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the batched matmuls: bfloat16 on a CPU with fast bf16 matmuls (oneDNN,
    AVX-512), float32 elsewhere. Vectors and optimizer state stay float32 either way."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return torch.float32
    try:
        fast_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private probe; absent means "don't know"
        fast_bf16 = False
    return torch.bfloat16 if fast_bf16 else torch.float32


class _Rows:
    """Embedding rows in the matmul dtype, for chunks of walks. A small table is converted once;
    a large one row by row, after the gather."""

    def __init__(self, weight: Tensor, lookups: int, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.convert_table = weight.shape[0] <= lookups and dtype != weight.dtype
        self.table = weight.detach().to(dtype) if self.convert_table else weight.detach()

    def __call__(self, walks: Tensor) -> Tensor:
        """The rows of the nodes in `walks`, shaped (*walks.shape, dim)."""
        rows = self.table.index_select(0, walks.reshape(-1))
        return rows.view(*walks.shape, self.table.shape[1]).to(self.dtype)


class _SkipGramLoss(torch.autograd.Function):
    """PyG's skip-gram loss over every window of the walks, fused: per chunk of walks one
    batched matmul scores each window start against its whole walk, and the gradient of the
    scores is formed in the same pass; the backward recomputes the rows (cheap) instead of
    keeping them.

    Positive walks' windows contribute -log σ(s), negative walks' -log(1 - σ(s)), each averaged
    over its pairs: PyG's loss without its EPS, computed as softplus so that saturated scores
    keep exact values and gradients (σ(s) - 1 and σ(s)). The matmuls run in `dtype` (bfloat16
    halves their cost on a CPU); everything else is float32."""

    @staticmethod
    def forward(
        ctx,
        weight: Tensor,
        pos_rw: Tensor,
        neg_rw: Tensor,
        context_size: int,
        dtype: torch.dtype,
        workers: _Workers,
    ) -> Tensor:
        walks = torch.cat([pos_rw, neg_rw])
        rows = _Rows(weight, walks.numel(), dtype)
        num_windows = walks.shape[1] + 1 - context_size
        pairs = num_windows * (context_size - 1)
        grad_s = walks.new_empty((len(walks), num_windows, context_size - 1), dtype=torch.float32)
        # z = -s for positives, s for negatives: both terms become softplus(z) = -log(1 - σ(z)),
        # and d loss / d s = -σ(z) / count for positives, σ(z) / count for negatives.
        chunks = [
            (start, min(start + CHUNK_WALKS, last), sign, sign / ((last - first) * pairs))
            for first, last, sign in ((0, len(pos_rw), -1.0), (len(pos_rw), len(walks), 1.0))
            for start in range(first, last, CHUNK_WALKS)
        ]

        def job(worker: int) -> Tensor:
            loss = grad_s.new_zeros(())
            for start, stop, sign, scale in chunks[worker :: workers.count]:
                h = rows(walks[start:stop])
                scores = torch.bmm(h[:, :num_windows], h.transpose(1, 2))
                z = _window_pairs(scores, context_size).float().mul_(sign)
                loss += torch.nn.functional.softplus(z).sum() * (scale * sign)
                torch.sigmoid(z, out=grad_s[start:stop]).mul_(scale)
            return loss

        ctx.save_for_backward(grad_s, walks)
        ctx.rows = rows  # the backward gathers the rows again rather than keep them
        ctx.num_nodes, ctx.workers = weight.shape[0], workers
        return torch.stack(workers.map(job)).sum()

    @staticmethod
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor, None, None, None, None, None]:
        grad_s, walks = ctx.saved_tensors
        num_nodes, dim, workers = ctx.num_nodes, ctx.rows.table.shape[1], ctx.workers
        length, context_size = walks.shape[1], grad_s.shape[2] + 1
        index, nodes = _accumulation_index(walks, num_nodes)
        table_rows = nodes.numel() if nodes is not None else num_nodes
        starts = range(0, len(walks), CHUNK_WALKS)

        def job(worker: int) -> Tensor:
            grad_rows = grad_s.new_zeros(table_rows, dim)
            for start in starts[worker :: workers.count]:
                stop = min(start + CHUNK_WALKS, len(walks))
                # s = h_i · h_j feeds rows i and j, so d/dh = (G + Gᵀ) h with G the length ×
                # length matrix of pair gradients: one matmul, no strided accumulation.
                grad_sym = grad_s.new_zeros(stop - start, length, length)
                _window_pairs(grad_sym, context_size).copy_(grad_s[start:stop])
                _window_pairs(grad_sym, context_size, transposed=True).copy_(grad_s[start:stop])
                h = ctx.rows(walks[start:stop])
                grad_h = torch.bmm(grad_sym.to(h.dtype), h).view(-1, dim).float()
                _accumulate(grad_rows, index[start:stop].reshape(-1), grad_h)
            return grad_rows

        partial_rows = workers.map(job)
        grad_rows = partial_rows[0]
        for more in partial_rows[1:]:
            grad_rows += more
        grad_rows.mul_(grad_loss)
        sparse = _sparse_rows(grad_rows, walks, nodes, num_nodes)
        return sparse, None, None, None, None, None


def _window_pairs(matrix: Tensor, context_size: int, transposed: bool = False) -> Tensor:
    """The view of a (walks, rows, length) score matrix holding exactly the windows' pairs:
    [w, i, k] is entry (i, i + k + 1), the start of window i against its k-th context node
    (with `transposed`, entry (i + k + 1, i)). A strided view, no copy: the elementwise work
    then touches the (context_size - 1) pairs per window only."""
    walks, rows, length = matrix.shape
    num_windows = length + 1 - context_size
    row_stride, batch_stride = length, rows * length
    # Moving to the next window moves one row down and one column right.
    if transposed:
        strides, offset = (batch_stride, row_stride + 1, row_stride), row_stride
    else:
        strides, offset = (batch_stride, row_stride + 1, 1), 1
    shape = (walks, num_windows, context_size - 1)
    return matrix.as_strided(shape, strides, matrix.storage_offset() + offset)


def _accumulation_index(walks: Tensor, num_nodes: int) -> tuple[Tensor, Tensor | None]:
    """Where each walk position's gradient row accumulates: the node itself in a dense table
    when the graph is no larger than the batch, else its rank among the batch's distinct nodes
    (returned too), so a huge graph never needs a table of every node."""
    if num_nodes <= walks.numel():
        return walks, None
    nodes, inverse = torch.unique(walks, return_inverse=True)
    return inverse, nodes


def _accumulate(table: Tensor, index: Tensor, rows: Tensor) -> None:
    """table[index[i]] += rows[i]; deterministic on every device."""
    if table.is_cuda:
        # CUDA's index_add_ adds with atomics (order varies run to run); index_put_ with
        # accumulate sorts first, so a seed reproduces the result.
        table.index_put_((index,), rows, accumulate=True)
    else:
        table.index_add_(0, index, rows)


def _sparse_rows(grad_rows: Tensor, walks: Tensor, nodes: Tensor | None, num_nodes: int) -> Tensor:
    """The gradient as a coalesced sparse tensor of the touched rows only (SparseAdam moves
    exactly those)."""
    if nodes is None:
        nodes = torch.nonzero(torch.bincount(walks.reshape(-1), minlength=num_nodes)).flatten()
        grad_rows = grad_rows.index_select(0, nodes)
    shape = (num_nodes, grad_rows.shape[1])
    return torch.sparse_coo_tensor(
        nodes.unsqueeze(0), grad_rows, shape, is_coalesced=True, check_invariants=False
    )


class Node2Vec(torch.nn.Module):
    r"""The Node2Vec model from `"node2vec: Scalable Feature Learning for Networks"
    <https://arxiv.org/abs/1607.00653>`_, trained as PyG's `Node2Vec` trains it.

    Each node's vector is a row of a sparse `nn.Embedding` (for `torch.optim.SparseAdam`).
    Skip-gram with negative sampling: windows of `context_size` slide over each second-order
    random walk, and the window's first node is pulled towards the other nodes in it; the same
    windows over "walks" of uniform random nodes give the negatives:
    loss = -log σ(h_start · h_ctx) - log(1 - σ(h_start · h_neg)), each term averaged.

    Unlike PyG, `pos_sample` and `neg_sample` return whole walks (a node's walks adjacent) and
    `loss` slides the windows itself, forming exactly PyG's pairs without copying each window.
    Build it on the device it trains on: the walk tables are plain tensors, not buffers.
    """

    def __init__(
        self,
        rowptr: Tensor,
        col: Tensor,
        embedding_dim: int,
        walk_length: int,
        context_size: int,
        walks_per_node: int = 1,
        p: float = 1.0,
        q: float = 1.0,
        num_negative_samples: int = 1,
    ) -> None:
        super().__init__()
        if not 2 <= context_size <= walk_length + 1:
            raise EmbedError(f"context_size must lie in 2..walk_length + 1, got {context_size}")
        self.num_nodes = rowptr.numel() - 1
        self.embedding_dim = embedding_dim
        self.walk_length = walk_length
        self.context_size = context_size
        self.walks_per_node = walks_per_node
        self.p, self.q = p, q
        self.num_negative_samples = num_negative_samples
        self.embedding = torch.nn.Embedding(
            self.num_nodes, embedding_dim, sparse=True, device=rowptr.device
        )
        self._graph = _WalkGraph(rowptr, col, second_order=p != 1.0 or q != 1.0)
        self.compute_dtype = compute_dtype(rowptr.device)
        self.workers = _SEQUENTIAL  # `_fit` lends CPU threads while it trains

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Small random vectors (see INIT_STD), drawn from `generator` for reproducibility."""
        with torch.no_grad():
            self.embedding.weight.normal_(0.0, INIT_STD, generator=generator)

    def forward(self, batch: Tensor | None = None) -> Tensor:
        """The vectors of `batch` (all nodes when None)."""
        weight = self.embedding.weight
        return weight if batch is None else weight.index_select(0, batch)

    def pos_sample(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        """`walks_per_node` biased random walks from each node of `batch`. With CPU workers,
        each walks a share of the batch with a generator seeded from `generator`."""
        walk = partial(_walks, self._graph, walk_length=self.walk_length, p=self.p, q=self.q)
        count = self.workers.count
        if count == 1 or batch.numel() < count:
            return walk(batch.repeat_interleave(self.walks_per_node), generator=generator)
        seeds = torch.randint(1 << 62, (count,), generator=generator, device=batch.device)
        seed_list, shares = seeds.tolist(), batch.tensor_split(count)

        def job(worker: int) -> Tensor:
            own = torch.Generator(batch.device).manual_seed(seed_list[worker])
            return walk(shares[worker].repeat_interleave(self.walks_per_node), generator=own)

        return torch.cat(self.workers.map(job))

    def neg_sample(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        """As many "walks" of uniformly drawn nodes per positive walk as
        `num_negative_samples`, each starting at its batch node (PyG)."""
        starts = batch.repeat_interleave(self.walks_per_node * self.num_negative_samples)
        shape = (starts.numel(), self.walk_length)
        rest = torch.randint(
            self.num_nodes, shape, generator=generator, device=batch.device, dtype=torch.int64
        )
        return torch.cat([starts.unsqueeze(1), rest], dim=1)

    def loss(self, pos_rw: Tensor, neg_rw: Tensor) -> Tensor:
        """Skip-gram negative-sampling loss over every window of the positive and negative walks."""
        weight, context, dtype = self.embedding.weight, self.context_size, self.compute_dtype
        loss: Tensor = _SkipGramLoss.apply(weight, pos_rw, neg_rw, context, dtype, self.workers)
        return loss

    def batches(
        self, batch_size: int, generator: torch.Generator, chunk_walks: int = 1 << 17
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch: every node once as a start node, shuffled; (pos_rw, neg_rw) per batch of
        `batch_size` nodes. Walks are drawn for many batches at once (up to `chunk_walks`
        walkers), so each walk step is one large tensor operation."""
        device = self.embedding.weight.device
        order = torch.randperm(self.num_nodes, generator=generator, device=device)
        per_node = self.walks_per_node
        negatives = per_node * self.num_negative_samples
        chunk_nodes = max(1, chunk_walks // (batch_size * per_node)) * batch_size
        for chunk in order.split(chunk_nodes):
            pos_rw = self.pos_sample(chunk, generator)
            neg_rw = self.neg_sample(chunk, generator)
            for start in range(0, chunk.numel(), batch_size):
                stop = min(start + batch_size, chunk.numel())
                yield (
                    pos_rw[start * per_node : stop * per_node],
                    neg_rw[start * negatives : stop * negatives],
                )


# --------------------------------------------------------------------------- training


def train_node2vec(
    edges: np.ndarray,
    num_nodes: int,
    params: Node2VecParams,
    *,
    device: str = "cpu",
    progress: Callable[[Progress], None] | None = None,
) -> np.ndarray:
    """Train Node2Vec on an undirected graph; return a (num_nodes, dim) float32 array.

    `edges` is an (E, 2) integer array of node ids in 0..num_nodes-1, taken as undirected
    (both directions, duplicates and self-loops dropped); every node gets a row, isolated ones
    too. `progress` hears `Progress(Stage.TRAINING, epoch, epochs)` after each epoch. The seed
    makes the result reproducible on a given device (on a CPU, for a given number of usable
    cores: they split the work).
    """
    edge_array = _validate(edges, num_nodes, params)
    if num_nodes == 0:
        return np.zeros((0, params.dim), dtype=np.float32)
    torch_device = torch.device(resolve_device(device))
    generator = torch.Generator(device=torch_device).manual_seed(params.seed)
    rowptr, col = undirected_csr(torch.from_numpy(edge_array).to(torch_device), num_nodes)
    model = Node2Vec(
        rowptr,
        col,
        embedding_dim=params.dim,
        walk_length=params.walk_length,
        context_size=params.context_size,
        walks_per_node=params.walks_per_node,
        p=params.p,
        q=params.q,
        num_negative_samples=params.num_negative_samples,
    )
    model.reset_parameters(generator)
    with _cpu_workers(torch_device) as workers:
        model.workers = workers
        _fit(model, params.epochs, generator, progress)
    model.workers = _SEQUENTIAL
    return model().detach().to("cpu", torch.float32).numpy()


def _fit(
    model: Node2Vec,
    epochs: int,
    generator: torch.Generator,
    progress: Callable[[Progress], None] | None,
) -> None:
    """PyG's training loop: SparseAdam over batches of start nodes, `epochs` times."""
    optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=LEARNING_RATE)
    for epoch in range(1, epochs + 1):
        for pos_rw, neg_rw in model.batches(BATCH_SIZE, generator):
            optimizer.zero_grad(set_to_none=True)
            model.loss(pos_rw, neg_rw).backward()
            optimizer.step()
        if progress is not None:
            progress(Progress(Stage.TRAINING, epoch, epochs, f"Node2Vec epoch {epoch}/{epochs}"))


@contextmanager
def _cpu_workers(device: torch.device) -> Iterator[_Workers]:
    """On a CPU: one loss worker per core this process may use (and torch allows), each op on
    one torch thread; torch's thread count is restored after. On CUDA: the calling thread."""
    if device.type != "cpu":
        yield _SEQUENTIAL
        return
    before = torch.get_num_threads()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else before
    workers = _Workers(min(before, usable))
    torch.set_num_threads(1)
    try:
        yield workers
    finally:
        workers.close()
        torch.set_num_threads(before)


def _validate(edges: np.ndarray, num_nodes: int, params: Node2VecParams) -> np.ndarray:
    """The edges as an (E, 2) int64 array, or EmbedError saying what is wrong."""
    if num_nodes < 0:
        raise EmbedError(f"num_nodes must be >= 0, got {num_nodes}")
    array = np.asarray(edges)
    if array.size == 0:
        array = array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise EmbedError(f"edges must be an (E, 2) array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise EmbedError(f"edges must hold integer node ids, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= num_nodes):
        raise EmbedError(
            f"edge endpoints must lie in 0..{num_nodes - 1}, got {array.min()}..{array.max()}"
        )
    _validate_params(params)
    return array.astype(np.int64, copy=False)


def _validate_params(params: Node2VecParams) -> None:
    positive = {
        "dim": params.dim,
        "walk_length": params.walk_length,
        "walks_per_node": params.walks_per_node,
        "num_negative_samples": params.num_negative_samples,
    }
    for name, value in positive.items():
        if value < 1:
            raise EmbedError(f"{name} must be >= 1, got {value}")
    if params.epochs < 0:
        raise EmbedError(f"epochs must be >= 0, got {params.epochs}")
    if not 2 <= params.context_size <= params.walk_length + 1:
        raise EmbedError(
            f"context_size must lie in 2..walk_length + 1 ({params.walk_length + 1}), "
            f"got {params.context_size}"
        )
    for name, rate in (("p", params.p), ("q", params.q)):
        if not (math.isfinite(rate) and rate > 0):
            raise EmbedError(f"{name} must be a positive finite number, got {rate}")
