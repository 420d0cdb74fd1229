"""`neo-ray run` end to end, seconds per stage, on ~100 files and on a large package.

Run from the repository root: `python -m bench.bench_pipeline`. The sources are installed
packages read in place (no clone stage): `pydantic` (about 100 Python files) and `ray`
(about 2,600). Vectors go to an embedded Qdrant in a temporary folder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.bench_graph import machine, package_folder
from neo_ray.config import Settings
from neo_ray.pipeline import run as pipeline
from neo_ray.stores.vectors import VectorStore

PACKAGES = ("pydantic", "ray")
STAGES = ("parse", "train", "upload")


def run(packages: tuple[str, ...] = PACKAGES) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="neo-bench-") as data:
        settings = Settings(data_dir=Path(data), max_file_bytes=10_000_000)
        store = VectorStore.open(settings)
        try:
            for package in packages:
                ref = pipeline.local_path_ref(package_folder(package))
                started = time.perf_counter()
                result = pipeline.run_pipeline(ref, settings, store)
                total = time.perf_counter() - started
                row: dict[str, object] = {
                    "package": package,
                    "files": result.files,
                    "edges": len(result.graph.edges),
                    "device": result.device,
                }
                row.update({s: round(result.stage_seconds.get(s, 0.0), 2) for s in STAGES})
                row["total"] = round(total, 2)
                rows.append(row)
        finally:
            store.close()
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    print(f"neo-ray run, seconds per stage ({machine()})")
    head = ["package", "files", "edges", "device", *STAGES, "total"]
    print(" | ".join(f"{h:>8}" for h in head))
    for row in rows:
        print(" | ".join(f"{row[h]!s:>8}" for h in head))


if __name__ == "__main__":
    print_table(run())
