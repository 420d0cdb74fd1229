"""The edge plane's metrics on Ray's Prometheus endpoint and dashboard (ray.util.metrics).

Ray exports each as `ray_<name>` on every node's metrics export port. Metric objects live in
the process that records them: each actor makes its own `EdgeMetrics` on first use.

    neo_queue_depth, neo_processing, neo_dead_letters      gauges, set by the bridge each scan
    neo_jobs_total{outcome}                                 counter, one per final record
    neo_stage_seconds{stage}                                histogram of each stage's seconds
    neo_walks_per_second, neo_training_pairs_per_second     gauges, of the last completed job
    neo_qdrant_upserts_per_second                           gauge, of the last completed job
    neo_gpu_utilization_percent, neo_gpu_memory_used_bytes,
    neo_gpu_memory_total_bytes {worker, device}             gauges, from NVML on GPU workers
"""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

from neo_ray.config import Settings
from neo_ray.models import GpuTelemetry, JobRecord, JobStatus

# Stages last from milliseconds (resolve) to minutes (a large clone or training run).
STAGE_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]


class EdgeMetrics:
    """The edge metrics of one process."""

    def __init__(self) -> None:
        self.queue_depth = Gauge("neo_queue_depth", description="tasks waiting in ingest_queue")
        self.processing = Gauge("neo_processing", description="tasks handed out, not yet acked")
        self.dead = Gauge("neo_dead_letters", description="entries in ingest_dead")
        self.jobs = Counter(
            "neo_jobs_total", description="finished jobs by outcome", tag_keys=("outcome",)
        )
        self.stage = Histogram(
            "neo_stage_seconds",
            description="seconds per pipeline stage",
            boundaries=STAGE_BOUNDARIES,
            tag_keys=("stage",),
        )
        self.walks = Gauge("neo_walks_per_second", description="random walks per training second")
        self.pairs = Gauge(
            "neo_training_pairs_per_second",
            description="skip-gram (centre, context) pairs trained per second",
        )
        self.upserts = Gauge(
            "neo_qdrant_upserts_per_second", description="vectors written per upload second"
        )
        gpu_tags = ("worker", "device")
        self.gpu_util = Gauge("neo_gpu_utilization_percent", tag_keys=gpu_tags)
        self.gpu_used = Gauge("neo_gpu_memory_used_bytes", tag_keys=gpu_tags)
        self.gpu_total = Gauge("neo_gpu_memory_total_bytes", tag_keys=gpu_tags)

    def gpu(self, worker: str, gpu: GpuTelemetry) -> None:
        tags = {"worker": worker, "device": gpu.name}
        self.gpu_util.set(gpu.utilization_percent, tags=tags)
        self.gpu_used.set(gpu.memory_used_bytes, tags=tags)
        self.gpu_total.set(gpu.memory_total_bytes, tags=tags)

    def queue(self, depth: int, processing: int, dead: int) -> None:
        self.queue_depth.set(depth)
        self.processing.set(processing)
        self.dead.set(dead)

    def job(self, record: JobRecord, settings: Settings) -> None:
        """Count a final record; a completed one also gives its stage times and rates."""
        self.jobs.inc(1, tags={"outcome": record.status.value})
        if record.status is not JobStatus.COMPLETE:
            return
        for stage, seconds in record.stage_seconds.items():
            self.stage.observe(max(float(seconds), 0.0), tags={"stage": stage})
        for gauge, rate in rates(record, settings).items():
            getattr(self, gauge).set(rate)


def rates(record: JobRecord, settings: Settings) -> dict[str, float]:
    """Walks/s and skip-gram pairs/s over the training stage, upserts/s over the upload stage.

    Derived from the record: every file is a node and starts `walks_per_node` walks; each walk
    yields `walk_length - context_size + 1` windows of `context_size` pairs, every epoch.
    """
    out: dict[str, float] = {}
    train = float(record.stage_seconds.get("train", 0.0))
    if train > 0:
        walks = record.files_processed * settings.walks_per_node
        windows = settings.walk_length - settings.context_size + 1
        out["walks"] = walks / train
        out["pairs"] = walks * windows * settings.context_size * settings.epochs / train
    upload = float(record.stage_seconds.get("upload", 0.0))
    if upload > 0:
        out["upserts"] = record.embeddings_generated / upload
    return out


@cache
def edge_metrics() -> EdgeMetrics:
    """This process's metrics (made once: Ray refuses two metrics of one name per process)."""
    return EdgeMetrics()
