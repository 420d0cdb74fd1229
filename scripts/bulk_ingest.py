"""Bulk ingestion as a Ray job: `ray job submit --working-dir . -- python scripts/bulk_ingest.py
repos.txt` (one URL a line, `#` comments, `-` for standard input).

Submits through the control plane's HTTP gate like any client (neo_ray/bulk.py holds the
logic, shared with `neo-ray bulk`); the job's exit status is 0 only when every job completed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The job runs from its working dir; the package may be installed, or only in that dir.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neo_ray import bulk
from neo_ray.config import load_settings
from neo_ray.errors import NeoRayError
from neo_ray.names import NAMESPACE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", metavar="FILE", help="repository URLs, one a line ('-': stdin)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    # The job supervisor hands its driver the job's config in this variable.
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        import ray

        # A Ray job's driver joins its cluster (ENVIRONMENT.md): the job shows on the
        # dashboard with its logs, though the work itself goes through HTTP.
        ray.init(namespace=NAMESPACE, log_to_driver=False)
    try:
        return bulk.bulk(args.file, load_settings(), progress=not args.no_progress)
    except NeoRayError as exc:
        print(f"bulk_ingest: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
