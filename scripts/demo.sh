#!/usr/bin/env bash
# `make demo`: start neo-ray on embedded defaults, ingest the sample repository through the
# HTTP route, show progress, status, history and nearest neighbours; leave the system running.
set -euo pipefail
cd "$(dirname "$0")/.."
NEO=.venv/bin/neo-ray
export NEO_DATA_DIR="${NEO_DATA_DIR:-$PWD/.neo}"
export NEO_ALLOW_LOCAL_REPOS=1
# neo-ray makes the Ray cluster's auth token in the data dir (nothing from ~/.ray).
export RAY_USAGE_STATS_ENABLED=0
sample="$NEO_DATA_DIR/sample-repo"

echo "== building the sample repository in $sample"
.venv/bin/python -c "import sys; from pathlib import Path; from neo_ray.sample import write_sample_repo; write_sample_repo(Path(sys.argv[1]))" "$sample"

echo "== neo-ray up"
$NEO up

echo "== neo-ray ingest $sample --wait   (POST /api/v1/ingestion/ingest/... with the admin token)"
$NEO ingest "$sample" --wait

echo "== neo-ray status"
$NEO status
echo "== neo-ray history"
$NEO history --limit 5
echo "== nearest neighbours (cosine similarity of the Node2Vec vectors)"
$NEO similar "$sample" shop/models/order.py shop/services/pricing.py web/src/api/client.ts -k 3

cat <<TXT

neo-ray is still running. Try:
  $NEO ingest <path or https://github.com/owner/repo> --wait
  curl -s http://127.0.0.1:${NEO_HTTP_PORT:-8000}/api/v1/ingestion/worker/status
Stop it with:  make down   (or: $NEO down)
TXT
