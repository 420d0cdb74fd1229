"""`python -m bench` (`make bench`): every benchmark, one after another, each printing its table.

`python -m bench graph node2vec` runs only those named.
"""

from __future__ import annotations

import importlib
import sys

SUITES = (
    "graph",
    "node2vec",
    "pipeline",
    "store",
    "latency",
    "control",
    "e2e",
    "cochange",
    "scale",
    "failover",
)


def main(names: list[str]) -> int:
    chosen = names or list(SUITES)
    unknown = [n for n in chosen if n not in SUITES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SUITES)}")
        return 2
    for name in chosen:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"\n== {name}")
        module.print_table(module.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
