"""A process pool kept for the life of the process, that runs CPU-bound chunks on every core."""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# forkserver, not fork: the callers (Ray actors) run several threads, and a forked copy of a
# threaded process can inherit a lock held mid-operation. The fork server is a clean
# single-threaded process started once; each child is a cheap fork of it.
_CONTEXT = multiprocessing.get_context("forkserver")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_atexit_registered = False


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, not the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def map_chunks(fn: Callable[[T], R], chunks: Sequence[T], workers: int) -> Iterator[tuple[int, R]]:
    """(index, fn(chunk)) for every chunk, in the order the chunks complete.

    The chunks run in the shared pool of `workers` processes (started on first need, kept
    for later calls). When the pool breaks (a child killed) or cannot start, the chunks it
    did not finish run here, one after another, and the next call starts a fresh pool.
    `fn` must be a module-level function: the children import it by name.
    """
    pool = _shared_pool(workers)
    if pool is None:
        yield from ((i, fn(chunk)) for i, chunk in enumerate(chunks))
        return
    left = set(range(len(chunks)))
    try:
        futures: dict[Future[R], int] = {pool.submit(fn, c): i for i, c in enumerate(chunks)}
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                index = futures.pop(future)
                result = future.result()
                left.discard(index)
                yield index, result
    except BrokenProcessPool:
        _discard(pool)
        yield from ((i, fn(chunks[i])) for i in sorted(left))


def worker_pids() -> frozenset[int]:
    """The process ids of the shared pool's children (empty when none is running)."""
    with _lock:
        pool = _pool
    # `_processes` is private but has been stable since 3.2; the public API names no pids.
    return frozenset() if pool is None else frozenset(pool._processes or ())


def shutdown() -> None:
    """Stop the shared pool and wait for its children to exit; the next call starts another."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def _shared_pool(workers: int) -> ProcessPoolExecutor | None:
    """The pool of `workers` children, made now if there is none of that size; None if the
    platform cannot run one (no working semaphores, no processes allowed)."""
    global _pool, _pool_size, _atexit_registered
    with _lock:
        if _pool is not None and _pool_size == workers:
            return _pool
        stale, _pool = _pool, None
        try:
            _pool = ProcessPoolExecutor(workers, mp_context=_CONTEXT, initializer=_child_setup)
        except (OSError, ImportError, NotImplementedError):
            return None
        _pool_size = workers
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        pool = _pool
    if stale is not None:
        stale.shutdown(wait=True, cancel_futures=True)
    return pool


def _discard(pool: ProcessPoolExecutor) -> None:
    """Forget a broken pool (unless another thread already replaced it) and reap it."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=True, cancel_futures=True)


def _child_setup() -> None:
    """Runs first in every child: die with the parent, and leave Ctrl-C to the parent."""
    # The parent reacts to Ctrl-C by shutting the pool down; a child that raised
    # KeyboardInterrupt on its own would break the pool instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        # The fork server exits when our caller dies (even by SIGKILL); this makes the
        # children follow it instead of lingering as orphans blocked on the task queue.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
