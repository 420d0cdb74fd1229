"""A process pool kept for the life of the process, that runs CPU-bound chunks on every core."""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# forkserver where the caller runs several threads (Ray actors): a forked copy of a threaded
# process can inherit a lock held mid-operation. The fork server is a clean single-threaded
# process started once; each child is a cheap fork of it. A process with one thread (the
# CLI) forks its children directly: no new interpreter to start, nothing to import again.
_FORKSERVER = multiprocessing.get_context("forkserver")

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
    `fn` must be a module-level function: the children import it by name. As with any
    multiprocessing start method but fork, a script run directly must guard its entry point
    (`if __name__ == "__main__":`); an unguarded one still gets every result, through the
    fallback, after its children fail.
    """
    pool = _shared_pool(workers)
    if pool is None:
        yield from ((i, fn(chunk)) for i, chunk in enumerate(chunks))
        return
    left = set(range(len(chunks)))
    futures: dict[Future[R], int] = {}
    try:
        for index, chunk in enumerate(chunks):
            futures[pool.submit(fn, chunk)] = index
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
    finally:
        for future in futures:  # the caller stopped early: drop the work not yet started
            future.cancel()


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
            _pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_child_setup)
        except (OSError, ImportError, NotImplementedError):
            return None
        _pool_size = workers
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        pool = _pool
    if stale is not None:  # another thread may still be using it: let its work finish
        stale.shutdown(wait=False)
    return pool


def _context() -> multiprocessing.context.BaseContext:
    """fork while this process has one thread (ProcessPoolExecutor forks every child before
    it starts its own manager thread), else forkserver."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return _FORKSERVER


def _discard(pool: ProcessPoolExecutor) -> None:
    """Forget a broken pool (unless another thread already replaced it) and reap it."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=True, cancel_futures=True)


def _child_setup() -> None:
    """Runs first in every child: leave Ctrl-C to the parent, and exit when the parent does."""
    # The parent reacts to Ctrl-C by shutting the pool down; a child that raised
    # KeyboardInterrupt on its own would break the pool instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(parent_sentinel: int) -> None:
    """Wait until the parent is gone, then end this child.

    A child waits for tasks on a queue it holds both ends of, so it would never notice a
    parent killed outright (SIGKILL skips atexit), and it also keeps the fork server
    alive: both would linger as orphans. The sentinel is the pipe the parent started this
    child through; it reads as ready once the parent's end is closed, that is at its death.
    """
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)
