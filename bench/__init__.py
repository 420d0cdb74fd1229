"""Benchmarks: neo-ray against its peers, measured in the same run (`make bench`)."""

import atexit
import shutil
import tempfile
from pathlib import Path

from neo_ray import raycluster

# Every Ray a benchmark starts uses a token of its own, as neo-ray does: nothing from ~/.ray.
_TOKEN_DIR = Path(tempfile.mkdtemp(prefix="neo-ray-bench-token-"))
atexit.register(shutil.rmtree, _TOKEN_DIR, True)
raycluster.use_auth_token(_TOKEN_DIR)
