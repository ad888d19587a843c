"""The stand-in DCGM exporter (devplatform/aiinfn_dev/dcgm.py): dcgm-exporter's format with its
pod mapping, and following a namespace's GPU pods for the demo."""

from __future__ import annotations

import urllib.request

from aiinfn_dev.dcgm import DcgmStandIn, GpuPod, gpus_of


def pod(name: str, gpus: str | None, phase: str = "Running", node: str | None = "n1") -> dict:
    limits = {"cpu": "1", **({"nvidia.com/gpu": gpus} if gpus else {})}
    return {
        "metadata": {"namespace": "demo", "name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"limits": limits}}]},
        "status": {"phase": phase},
    }


def test_exposition_is_dcgm_exporters_format_with_the_pod_mapping():
    exporter = DcgmStandIn()
    exporter.set(GpuPod("jhub", "jupyter-alice", "server1-t4", "Tesla T4", [0, 42.5]))
    lines = exporter.exposition().splitlines()
    assert lines[:2] == [
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).",
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
    ]
    assert len(lines) == 4
    assert lines[3].startswith('DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-')
    assert lines[3].endswith(
        'device="nvidia1",modelName="Tesla T4",Hostname="server1-t4",container="notebook",'
        'namespace="jhub",pod="jupyter-alice"} 42.5'
    )
    exporter.remove("jhub", "jupyter-alice")
    assert len(exporter.exposition().splitlines()) == 2


def test_a_mig_slice_reports_the_profiling_ratio_per_gpu_instance():
    exporter = DcgmStandIn()
    exporter.set(GpuPod("jhub", "p", "n", "NVIDIA A100", [0.25], mig_profile="1g.10gb"))
    lines = exporter.exposition().splitlines()
    assert lines[2:4] == [
        "# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.",
        "# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge",
    ]
    assert 'GPU_I_PROFILE="1g.10gb",GPU_I_ID="1"' in lines[4] and lines[4].endswith("} 0.25")


def test_it_serves_metrics_on_the_loopback():
    exporter = DcgmStandIn()
    target = exporter.start()
    try:
        exporter.set(GpuPod("jhub", "p", "n", "T4", [7]))
        assert target.startswith("127.0.0.1:")
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as answer:
            assert 'pod="p"} 7' in answer.read().decode()
    finally:
        exporter.stop()


def test_follow_serves_running_gpu_pods_and_keeps_what_was_set():
    exporter = DcgmStandIn()
    exporter.follow([pod("a", "2"), pod("cpu", None), pod("pending", "1", "Pending")], 0)
    assert set(exporter.pods) == {("demo", "a")}
    assert exporter.pods["demo", "a"].utilisation == [0, 0]
    exporter.set(GpuPod("demo", "a", "n1", "", [90, 90]))
    exporter.follow([pod("a", "2"), pod("b", "1")], 0)
    assert exporter.pods["demo", "a"].utilisation == [90, 90]
    assert exporter.pods["demo", "b"].utilisation == [0]
    exporter.follow([pod("b", "1")], 0)
    assert set(exporter.pods) == {("demo", "b")}


def test_gpus_of_counts_limits_else_requests():
    assert gpus_of(pod("a", "3")) == 3
    requested = {"spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": "1"}}}]}}
    assert gpus_of(requested) == 1
    assert gpus_of({"spec": {"containers": [{"name": "c"}]}}) == 0
