"""GPU telemetry through NVML: the fields a worker on a GPU reports, and None on the CPU."""

from __future__ import annotations

import pytest

from neo_ray.edge.gpu import open_gpu, physical_index


def test_the_cpu_has_no_gpu_telemetry() -> None:
    assert open_gpu("cpu", []) is None


def test_the_gpu_index_is_the_first_ray_assigned(monkeypatch: pytest.MonkeyPatch) -> None:
    assert physical_index(["3", "1"]) == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert physical_index([]) == 2


@pytest.mark.gpu
def test_nvml_reads_the_gpu_name_utilisation_and_memory() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu = open_gpu("cuda", [])
    assert gpu is not None
    reading = gpu.read()
    assert reading is not None and reading.name == torch.cuda.get_device_name(0)
    assert 0 <= reading.utilization_percent <= 100
    assert 0 < reading.memory_used_bytes <= reading.memory_total_bytes
