"""The demo's simulated GPUs: busy unless a pod's annotation says otherwise (how a demo user or
the demo test makes a GPU idle for the culler)."""

from aiinfn_dev import dcgm, monitoring


def pod(name: str, gpus: int = 1, phase: str = "Running", **annotations: str) -> dict:
    return {
        "metadata": {"namespace": "demo", "name": name, "annotations": annotations or None},
        "spec": {
            "nodeName": "node-a100",
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def test_a_pods_utilisation_is_its_annotation_clamped_else_busy():
    key = monitoring.UTILISATION
    assert monitoring.utilisation(pod("a")) == monitoring.BUSY
    assert monitoring.utilisation(pod("a", **{key: "0"})) == 0.0
    assert monitoring.utilisation(pod("a", **{key: "12.5"})) == 12.5
    assert monitoring.utilisation(pod("a", **{key: "250"})) == 100.0
    assert monitoring.utilisation(pod("a", **{key: "-3"})) == 0.0
    assert monitoring.utilisation(pod("a", **{key: "idle"})) == monitoring.BUSY


def test_simulate_serves_running_gpu_pods_each_at_its_utilisation():
    exporter = dcgm.DcgmStandIn()
    idle = pod("idle", gpus=2, **{monitoring.UTILISATION: "0"})
    pods = [idle, pod("busy"), pod("pending", phase="Pending"), pod("cpu", gpus=0)]
    monitoring.simulate(exporter, pods)
    served = {name: entry.utilisation for (_, name), entry in exporter.pods.items()}
    assert served == {"idle": [0.0, 0.0], "busy": [monitoring.BUSY]}
    exposition = exporter.exposition()
    assert 'namespace="demo",pod="idle"} 0\n' in exposition
    assert f'namespace="demo",pod="busy"}} {monitoring.BUSY:g}\n' in exposition
