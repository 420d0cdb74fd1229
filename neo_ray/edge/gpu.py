"""GPU telemetry through NVML (nvidia-ml-py), as the seed watched `nvidia-smi`.

Imported only by a worker whose device is CUDA; `pynvml` is imported inside, so a CPU node
never loads NVML. Any NVML failure yields None: telemetry must never stop a worker.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from neo_ray.models import GpuTelemetry

log = logging.getLogger(__name__)


class Nvml:
    """One GPU, by its physical index, read through NVML."""

    def __init__(self, index: int) -> None:
        import pynvml

        self._nvml: Any = pynvml
        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(self._handle)
        self.name = name.decode() if isinstance(name, bytes) else str(name)

    def read(self) -> GpuTelemetry | None:
        try:
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        except self._nvml.NVMLError:
            log.warning("NVML could not read the GPU", exc_info=True)
            return None
        return GpuTelemetry(
            name=self.name,
            utilization_percent=float(util.gpu),
            memory_used_bytes=int(memory.used),
            memory_total_bytes=int(memory.total),
        )


def physical_index(assigned: list[str] | list[int]) -> int:
    """The NVML index of the first GPU Ray gave this process (CUDA_VISIBLE_DEVICES order)."""
    if assigned:
        return int(assigned[0])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


def open_gpu(device: str, assigned: list[str] | list[int]) -> Nvml | None:
    """NVML on the worker's GPU when it trains on CUDA; None on the CPU or without NVML."""
    if not device.startswith("cuda"):
        return None
    try:
        return Nvml(physical_index(assigned))
    except Exception:  # no driver library, a GPU Ray declared but NVML cannot see
        log.warning("GPU telemetry unavailable", exc_info=True)
        return None
