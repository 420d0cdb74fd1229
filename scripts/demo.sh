#!/usr/bin/env bash
# `make demo`: start neo-ray on embedded defaults, ingest the sample repository through the
# HTTP route, show progress, status, history and nearest neighbours; leave the system running.
set -euo pipefail
cd "$(dirname "$0")/.."
NEO=.venv/bin/neo-ray
export NEO_DATA_DIR="${NEO_DATA_DIR:-$PWD/.neo}"
export NEO_ALLOW_LOCAL_REPOS=1 NEO_LOCAL_REPOS_ROOT="$NEO_DATA_DIR"
# neo-ray makes the Ray cluster's auth token in the data dir (nothing from ~/.ray).
export RAY_USAGE_STATS_ENABLED=0
sample="$NEO_DATA_DIR/sample-repo"

echo "== building the sample repository in $sample"
.venv/bin/python -c "import sys; from pathlib import Path; from neo_ray.pipeline.sample import write_sample_repo; write_sample_repo(Path(sys.argv[1]))" "$sample"

echo "== neo-ray up"
$NEO up

echo "== neo-ray ingest $sample --wait   (POST /api/v1/ingestion/ingest/... with the admin token)"
$NEO ingest "$sample" --wait

echo "== neo-ray status"
$NEO status
echo "== neo-ray history"
$NEO history --limit 5
echo "== files like shop/models/order.py, with the graph evidence behind each score"
$NEO search "$sample" shop/models/order.py --limit 3 --mode hybrid
echo "== who depends on shop/models/order.py, two levels out"
$NEO deps "$sample" shop/models/order.py --dependents --depth 2

cat <<TXT

neo-ray is still running. The live dashboard: http://127.0.0.1:${NEO_HTTP_PORT:-8000}/
Try:
  $NEO ingest <path or https://github.com/owner/repo> --wait
  curl -s http://127.0.0.1:${NEO_HTTP_PORT:-8000}/api/v1/ingestion/worker/status
Stop it with:  make down   (or: $NEO down)
TXT
