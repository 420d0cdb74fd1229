"""`python -m bench` (`make bench`): every benchmark, one after another, each printing its table.

`python -m bench graph node2vec` runs only those named. Options after the names go to the
one suite that takes them (`python -m bench soak --duration 300`). The soak runs only when
named: it takes minutes by design. A suite with `passed(rows)` makes the run exit 1 when
that says false (an invariant broke).
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
    "soak",
    "failover",
    "front",
)
ON_REQUEST = ("soak",)


def main(argv: list[str]) -> int:
    first = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, extra = argv[:first], argv[first:]
    chosen = names or [n for n in SUITES if n not in ON_REQUEST]
    unknown = [n for n in chosen if n not in SUITES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SUITES)}")
        return 2
    modules = {name: importlib.import_module(f"bench.bench_{name}") for name in chosen}
    if extra:
        takers = [m for m in modules.values() if hasattr(m, "options")]
        if len(takers) != 1:
            print(f"options {' '.join(extra)} need exactly one named suite that takes options")
            return 2
        takers[0].options(extra)
    status = 0
    for name, module in modules.items():
        print(f"\n== {name}")
        rows = module.run()
        module.print_table(rows)
        if hasattr(module, "passed") and not module.passed(rows):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
