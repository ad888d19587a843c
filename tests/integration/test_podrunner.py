"""The pod runner on the real control plane: pods with a catalog environment image really run
here (exit codes, readiness on the pod IP, volumes, logs, deletion); other pods stay kwok's."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster import sandbox
from kubernetes_asyncio.client.rest import ApiException

from aiinfn_hub import catalog
from tests.helpers import restricted_pod, wait_until
from tests.hub import hub_in_namespace

pytestmark = pytest.mark.integration

IMAGE = catalog.load(catalog.default_path()).environments["cpu"].image


@pytest.fixture(scope="session")
def pod_runner(devcluster):
    """The session cluster runs the pod runner (skip when it cannot: no notebook environment)."""
    _, cluster = devcluster
    if cluster is None:
        pytest.skip(
            "the pod runner is part of the built dev cluster, not of an AIINFN_KUBECONFIG one"
        )
    if "pod-runner" not in {p.name for p in cluster.status().processes}:
        pytest.skip(
            f"dev cluster {cluster.name!r} runs without the pod runner (see its `up` output)"
        )
    return cluster


def runner_pod(name: str, command: list[str], **spec: object) -> dict:
    pod = restricted_pod(name, image=IMAGE, command=command)
    pod["spec"].update(spec)
    return pod


async def finished(core, namespace: str, name: str):
    pod = await core.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


async def gone(core, namespace: str, name: str) -> bool:
    try:
        await core.read_namespaced_pod(name, namespace)
    except ApiException as error:
        return error.status == 404
    return False


def sandbox_pids(uid: str) -> list[int]:
    """The sandbox processes of a pod (their plan path holds its uid) and their children."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and uid in (entry / "cmdline").read_bytes().decode(
                errors="replace"
            ):
                pids.append(int(entry.name))
                pids += [
                    int(c) for c in (entry / "task" / entry.name / "children").read_text().split()
                ]
        except OSError:
            pass
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def pod_log(core, namespace: str, name: str, **options: object) -> str:
    """pods/log as sent (the client would parse "42" as JSON)."""
    response = await core.read_namespaced_pod_log(
        name, namespace, _preload_content=False, **options
    )
    try:
        return (await response.read()).decode()
    finally:
        response.release()


async def events(core, namespace: str, name: str) -> list[str]:
    listed = await core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [event.reason for event in listed.items]


@pytest.mark.parametrize(
    "code, phase, reason", [(0, "Succeeded", "Completed"), (3, "Failed", "Error")]
)
async def test_catalog_image_pod_runs_and_ends_with_its_exit_code(
    pod_runner, core, namespace, code, phase, reason
):
    script = (
        "import os, socket; print('hello from', os.getuid(), socket.gethostname()); "
        f"raise SystemExit({code})"
    )
    await core.create_namespaced_pod(
        namespace, runner_pod("once", ["python", "-c", script], restartPolicy="Never")
    )
    pod = await wait_until(lambda: finished(core, namespace, "once"), "the pod to finish")
    assert pod.status.phase == phase
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (code, reason)
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network("127.64.0.0/14")
    assert await pod_log(core, namespace, "once") == "hello from 1000 once\n"
    assert {"Pulled", "Created", "Started"} <= set(await events(core, namespace, "once"))


async def test_job_pod_with_a_notebook_image_runs_and_the_job_completes(
    pod_runner, core, batch, namespace
):
    template = runner_pod("x", ["python", "-c", "print(42)"], restartPolicy="Never")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bunshin"},
        "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}},
    }
    await batch.create_namespaced_job(namespace, job)

    async def complete():
        current = await batch.read_namespaced_job("bunshin", namespace)
        return current if current.status.succeeded == 1 else None

    await wait_until(complete, "the Job to complete")
    pod = (await core.list_namespaced_pod(namespace, label_selector="job-name=bunshin")).items[0]
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    assert await pod_log(core, namespace, pod.metadata.name) == "42\n"


@pytest_asyncio.fixture(loop_scope="session")
async def claim(core, namespace, tmp_path):
    """A PVC bound to a hostPath PV on a local folder (PVs may use hostPath under "restricted")."""
    folder = tmp_path / "claim"
    folder.mkdir()
    folder.chmod(0o777)
    name = f"runner-{namespace}"
    await core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "hostPath": {"path": str(folder)},
                "claimRef": {"namespace": namespace, "name": "data"},
            },
        }
    )
    await core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )

    async def bound():
        return (
            await core.read_namespaced_persistent_volume_claim("data", namespace)
        ).status.phase == "Bound"

    await wait_until(bound, "the claim to be bound")
    try:
        yield folder
    finally:
        await core.delete_persistent_volume(name)


async def test_server_pod_is_ready_once_its_port_answers_and_its_process_goes_with_the_pod(
    pod_runner, core, namespace, claim
):
    # The server starts when the test says so, through a file on the claim: Running before Ready.
    script = (
        "while [ ! -e /data/go ]; do sleep 0.1; done; "
        "exec python -m http.server 8888 --bind $(POD_IP)"
    )
    pod = runner_pod(
        "server",
        ["sh", "-c", script],
        terminationGracePeriodSeconds=2,
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    )
    container = pod["spec"]["containers"][0]
    container["env"] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    ]
    container["ports"] = [{"name": "http", "containerPort": 8888}]
    container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    await core.create_namespaced_pod(namespace, pod)

    async def running():
        current = await core.read_namespaced_pod("server", namespace)
        statuses = current.status.container_statuses or []
        return current if statuses and statuses[0].state.running else None

    current = await wait_until(running, "the container to run")
    url = f"http://{current.status.pod_ip}:8888/"
    assert current.status.phase == "Running"
    assert not current.status.container_statuses[0].ready
    assert any(c.type == "Ready" and c.status == "False" for c in current.status.conditions)
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)

    (claim / "go").write_text("")

    async def ready():
        current = await core.read_namespaced_pod("server", namespace)
        return current if current.status.container_statuses[0].ready else None

    await wait_until(ready, "the pod to be ready")
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
    pids = sandbox_pids(current.metadata.uid)
    assert len(pids) == 2 and all(alive(pid) for pid in pids)

    await core.delete_namespaced_pod("server", namespace)
    await wait_until(lambda: gone(core, namespace, "server"), "the pod object to go")
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


async def test_pod_with_another_image_stays_simulated_by_kwok(pod_runner, core, namespace):
    await core.create_namespaced_pod(
        namespace, restricted_pod("simulated", command=["python", "-c", "print(1)"])
    )

    async def ready():
        pod = await core.read_namespaced_pod("simulated", namespace)
        return (
            pod
            if pod.status.container_statuses and pod.status.container_statuses[0].ready
            else None
        )

    pod = await wait_until(ready, "kwok to report the pod ready")
    assert pod.status.phase == "Running"
    assert not sandbox_pids(pod.metadata.uid)
    assert "Started" not in await events(
        core, namespace, "simulated"
    )  # kwok's stages send no events


async def test_a_catalog_image_pod_on_a_remote_site_is_left_to_its_kwok_stages(
    pod_runner, core, namespace
):
    """A virtual node stands for a remote site: the site, played by kwok's per-site stages, runs
    the pod (no local process, whatever its image), and kwok deletes it."""
    site = {"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}
    await core.create_namespaced_pod(
        namespace,
        runner_pod(
            "remote",
            ["python", "-c", "raise SystemExit(3)"],
            restartPolicy="Never",
            nodeSelector={"kubernetes.io/hostname": "vk-podman-vm"},
            tolerations=[site],
        ),
    )

    async def ready():
        pod = await core.read_namespaced_pod("remote", namespace)
        statuses = pod.status.container_statuses or []
        return pod if statuses and statuses[0].ready else None

    pod = await wait_until(ready, "the site's stages to report the pod ready")
    assert (pod.spec.node_name, pod.status.phase) == ("vk-podman-vm", "Running")
    assert not sandbox_pids(pod.metadata.uid)
    assert "Started" not in await events(core, namespace, "remote")
    await core.delete_namespaced_pod("remote", namespace)
    await wait_until(lambda: gone(core, namespace, "remote"), "kwok to delete the pod")


async def test_process_killed_from_outside_fails_the_pod(pod_runner, core, namespace):
    await core.create_namespaced_pod(
        namespace,
        runner_pod(
            "victim",
            ["python", "-c", "import time; print('up', flush=True); time.sleep(600)"],
            restartPolicy="Never",
        ),
    )

    async def running():
        pod = await core.read_namespaced_pod("victim", namespace)
        statuses = pod.status.container_statuses or []
        return pod if statuses and statuses[0].state.running else None

    pod = await wait_until(running, "the container to run")
    supervisor, process = sandbox_pids(pod.metadata.uid)
    os.kill(process, signal.SIGKILL)
    pod = await wait_until(lambda: finished(core, namespace, "victim"), "the pod to fail")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "Error")
    assert not alive(supervisor)


async def test_restart_policy_on_failure_restarts_with_the_previous_log_kept(
    pod_runner, core, namespace, claim
):
    # Fails on the first run, succeeds on the second: the claim keeps count.
    script = (
        "if [ -e /data/ran ]; then echo second; exit 0; fi; touch /data/ran; echo first; exit 1"
    )
    pod = runner_pod(
        "flaky",
        ["sh", "-c", script],
        restartPolicy="OnFailure",
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    )
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    await core.create_namespaced_pod(namespace, pod)
    pod = await wait_until(
        lambda: finished(core, namespace, "flaky"), "the pod to finish", limit=90
    )
    status = pod.status.container_statuses[0]
    assert pod.status.phase == "Succeeded"
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 1
    assert await pod_log(core, namespace, "flaky") == "second\n"
    assert await pod_log(core, namespace, "flaky", previous=True) == "first\n"
    assert "BackOff" in await events(core, namespace, "flaky")


async def test_volumes_env_and_identity_as_a_kubelet_gives_them(pod_runner, core, namespace):
    await core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "token"},
            "data": {"access_token": base64.b64encode(b"first").decode()},
        },
    )
    await core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"colour": "blue"},
        },
    )
    script = (
        "id -u; id -G; echo $HOME $COLOUR $TOKEN_ENV; ls /scratch; "
        "touch /scratch/x && echo scratch-ok; "
        "while true; do cat /var/run/secrets/aiinfn/access_token; echo; sleep 0.2; done"
    )
    pod = runner_pod(
        "volumes",
        ["sh", "-c", script],
        terminationGracePeriodSeconds=1,
        securityContext={
            "runAsNonRoot": True,
            "runAsUser": 2001,
            "runAsGroup": 2001,
            "fsGroup": 3001,
            "supplementalGroups": [4001],
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        volumes=[
            {"name": "token", "secret": {"secretName": "token", "defaultMode": 0o440}},
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    container = pod["spec"]["containers"][0]
    del container["securityContext"]["runAsUser"]
    container["env"] = [
        {"name": "COLOUR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "colour"}}},
        {
            "name": "TOKEN_ENV",
            "valueFrom": {"secretKeyRef": {"name": "token", "key": "access_token"}},
        },
    ]
    container["volumeMounts"] = [
        {"name": "token", "mountPath": "/var/run/secrets/aiinfn", "readOnly": True},
        {"name": "scratch", "mountPath": "/scratch"},
    ]
    await core.create_namespaced_pod(namespace, pod)

    async def log_has(text):
        try:
            return text in await pod_log(core, namespace, "volumes")
        except ApiException:
            return False

    # The token file's line, after scratch-ok: "first\n" alone also ends the echo's line.
    await wait_until(lambda: log_has("scratch-ok\nfirst\n"), "the token file in the log")
    lines = (await pod_log(core, namespace, "volumes")).splitlines()
    identity_rows = (
        2 if os.geteuid() == 0 else 1
    )  # run by root, every id is real (docs/devcluster.md)
    assert lines[0] == "2001"
    if identity_rows == 2:
        assert lines[1].split() == ["2001", "3001", "4001"]
    assert lines[identity_rows : identity_rows + 2] == ["/home/jovyan blue first", "scratch-ok"]
    await core.patch_namespaced_secret(
        "token", namespace, {"data": {"access_token": base64.b64encode(b"second").decode()}}
    )
    await wait_until(lambda: log_has("second\n"), "the refreshed token in the file")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def real_hub(pod_runner, devcluster, api_client, tmp_path_factory):
    """A hub whose notebook URL is the pod's own (no stand-in), with the storage claims."""
    kubeconfig, _ = devcluster
    async with hub_in_namespace(
        api_client,
        kubeconfig,
        tmp_path_factory.mktemp("hub"),
        {"alice": {"groups": ["cms-ml"]}},
        {"default_policy": {"accelerators": ["cpu"], "environments": "*"}},
        ["c.KubeSpawner.get_pod_url = None"],
    ) as hub:
        yield hub


async def test_hub_spawns_a_real_jupyterlab_reached_at_the_pod_ip(real_hub):
    status, body = await asyncio.to_thread(real_hub.request, "POST", "/users/alice/server", {})
    assert status in (201, 202), body
    try:

        async def ready():
            code, model = await asyncio.to_thread(real_hub.request, "GET", "/users/alice")
            server = (model.get("servers") or {}).get("", {})
            return server if server.get("ready") else None

        server = await wait_until(ready, "the notebook server to be ready", limit=120)
        assert server["url"] == "/user/alice/"
        # Through the proxy to the pod IP: JupyterLab's API answers with the user's token.
        code, token = await asyncio.to_thread(real_hub.request, "POST", "/users/alice/tokens", {})
        request = urllib.request.Request(
            f"{real_hub.url}/user/alice/api/status",
            headers={"Authorization": f"token {token['token']}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        with urllib.request.urlopen(
            urllib.request.Request(
                f"{real_hub.url}/user/alice/lab",
                headers={"Authorization": f"token {token['token']}"},
            ),
            timeout=30,
        ) as response:
            assert b"JupyterLab" in response.read()
    finally:
        await asyncio.to_thread(real_hub.request, "DELETE", "/users/alice/server")


def test_sandbox_probe_says_this_machine_can_run_pods(tmp_path):
    assert sandbox.probe(str(tmp_path)) is None


async def test_a_killed_runner_takes_its_containers_with_it(tmp_path):
    """The sandbox and the container's whole PID namespace go when their runner dies."""
    (tmp_path / "rootfs").mkdir()
    plan = {
        "argv": ["sh", "-c", "sleep 600 & sleep 600"],
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": "/",
        "uid": 65534,
        "gid": 65534,
        "groups": [],
        "hostname": "orphan",
        "no_new_privs": True,
        "read_only_root": False,
        "host_paths": ["/usr", "/bin", "/lib", "/lib64", "/etc"],
        "mounts": [],
        "etc": {},
        "root": str(tmp_path / "rootfs"),
        "log": str(tmp_path / "0.log"),
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    # A stand-in runner: starts the sandbox, says its pid once the container runs, then waits.
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import os, subprocess, sys, time\n"
                "p = subprocess.Popen([sys.executable, '-m', 'aiinfn_dev.devcluster.sandbox', "
                "sys.argv[1], str(os.getpid())],"
                " stdout=subprocess.PIPE)\n"
                "p.stdout.readline()\nprint(p.pid, flush=True)\ntime.sleep(600)\n"
            ),
            str(tmp_path / "plan.json"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        supervisor = int(await asyncio.to_thread(runner.stdout.readline))
        container = [
            int(c)
            for c in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        ]
        assert len(container) == 1

        async def both_sleeping():
            children = (
                Path(f"/proc/{container[0]}/task/{container[0]}/children").read_text().split()
            )
            return [int(c) for c in children] if len(children) == 2 else None

        inside = await wait_until(both_sleeping, "the container's two processes")
    finally:
        runner.kill()
        runner.wait()

    async def all_gone():
        return not any(alive(pid) for pid in [supervisor, *container, *inside])

    await wait_until(all_gone, "the sandbox and its processes to go")
