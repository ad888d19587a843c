"""Storage, numeric identity and the access-token Secret on the real control plane.

The API server (with Pod Security "restricted" enforced) judges every storage combination; the
PV controller binds helm-values/storage.yaml's claims (their volumes are local folders); the
ephemeral-volume controller makes scratch claims; identity records and token Secrets are real
objects. Hub-level tests spawn through a real JupyterHub.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import secrets
import stat
import urllib.error
import urllib.parse

import pytest
import pytest_asyncio
from aiinfn_dev import devstorage
from aiinfn_dev.devcluster.cluster import DevCluster
from aiinfn_dev.devcluster.processes import bindable, free_port
from kubernetes_asyncio import client

from aiinfn_hub import catalog, identity, k8s, labels, names, tokens, volumes
from aiinfn_hub.identity import Identity, IdentityStore
from aiinfn_hub.services.jobs.request import JobRequest
from aiinfn_hub.storage_config import StorageSettings
from tests.helpers import has_default_service_account, restricted_container, wait_until
from tests.hub import KWOK_NOTEBOOKS, hub_in_namespace
from tests.unqueued_job import unqueued_job

pytestmark = pytest.mark.integration

IMAGE = "harbor.cloud.infn.it/ai-infn/cpu:2025.10"
CATALOG = catalog.load(catalog.default_path())
PROJECT_GIDS = {"cms-ml": 200000, "lhcb-flashsim": 200001, "qml": 200002}


def notebook_pod(name: str, storage: volumes.PodStorage, identity: Identity) -> dict:
    """A pod the way AiInfnSpawner assembles it from the builders' output."""
    container = restricted_container("notebook", IMAGE)
    container["securityContext"] = volumes.container_security_context(identity)
    container["volumeMounts"] = storage.mounts
    container["env"] = [{"name": k, "value": v} for k, v in storage.environment.items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": storage.security_context,
            "initContainers": storage.init_containers,
            "containers": [container],
            "volumes": storage.volumes,
        },
    }


def combinations():
    """Every option the builders have: 432 pods."""
    for public_cvmfs, envs, juicefs, scratch, token, init, projects in itertools.product(
        (True, False),
        ("off", "reader", "curator"),
        (True, False),
        ("emptyDir", "ephemeral"),
        ("none", "token", "token+bucket"),
        (True, False),
        ((), ("qml",), ("cms-ml", "lhcb-flashsim")),
    ):
        settings = StorageSettings(
            public_claim="aiinfn-shared" if public_cvmfs else "",
            cvmfs_claim="aiinfn-cvmfs" if public_cvmfs else "",
            envs_claim="" if envs == "off" else "aiinfn-envs",
            juicefs_claim="aiinfn-juicefs" if juicefs else "",
            scratch_storage_class="aiinfn-scratch" if scratch == "ephemeral" else "",
            bucket_csi_driver="rclone.csi.example.org" if token == "token+bucket" else "",
            bucket_volume_attributes={"bucket": "{user_slug}"},
            init_directories=init,
        )
        gids = {p: PROJECT_GIDS[p] for p in projects}
        if envs == "curator":
            gids["envs-admins"] = 200003
        user = volumes.StorageUser("carol", Identity(100002, gids), projects, token=token != "none")
        yield volumes.build(settings, user, "50Gi", "2Gi", IMAGE), user.identity


async def test_every_storage_combination_passes_restricted(core, namespace):
    refused = []

    async def dry_run(index, storage, identity):
        try:
            await core.create_namespaced_pod(
                namespace, notebook_pod(f"combo-{index}", storage, identity), dry_run="All"
            )
        except client.ApiException as error:
            refused.append((index, error.body))

    cases = list(combinations())
    for start in range(0, len(cases), 24):
        await asyncio.gather(
            *(dry_run(i, s, ident) for i, (s, ident) in enumerate(cases[start : start + 24], start))
        )
    assert not refused, refused[:3]
    assert len(cases) == 432

    # The namespace really enforces "restricted": what the builders avoid is refused.
    storage, identity = cases[0]
    for breach in (
        {"name": "home", "nfs": {"server": "127.0.0.1", "path": "/export/home"}},
        {"name": "home", "hostPath": {"path": "/export/home"}},
    ):
        pod = notebook_pod("breach", storage, identity)
        pod["spec"]["volumes"] = [
            breach if v["name"] == "home" else v for v in pod["spec"]["volumes"]
        ]
        with pytest.raises(client.ApiException) as forbidden:
            await core.create_namespaced_pod(namespace, pod, dry_run="All")
        message = json.loads(forbidden.value.body)["message"]
        assert (
            forbidden.value.status == 403 and 'violates PodSecurity "restricted:latest"' in message
        )
    as_root = notebook_pod("root", storage, Identity(0))
    with pytest.raises(client.ApiException) as forbidden:
        await core.create_namespaced_pod(namespace, as_root, dry_run="All")
    assert "runAsUser=0" in json.loads(forbidden.value.body)["message"]


async def test_a_full_notebook_pod_binds_its_claims_and_runs(core, namespace, storage):
    settings = StorageSettings(
        juicefs_claim="aiinfn-juicefs", bucket_csi_driver="rclone.csi.example.org"
    )
    identity = Identity(100002, {**PROJECT_GIDS, "envs-admins": 200003})
    user = volumes.StorageUser("carol", identity, tuple(PROJECT_GIDS), token=True)
    pod = notebook_pod("carol", volumes.build(settings, user, "50Gi", "2Gi", IMAGE), identity)
    # The spawner writes the token Secret first; the pod runner, like a kubelet, waits for it.
    await core.create_namespaced_secret(namespace, tokens.make_secret("carol", "at-test"))
    await core.create_namespaced_pod(namespace, pod)

    async def running():
        current = await core.read_namespaced_pod("carol", namespace)
        return current if current.status.phase == "Running" else None

    current = await wait_until(running, "the notebook pod to run")
    assert current.spec.security_context.run_as_user == 100002
    assert current.spec.security_context.supplemental_groups == [200000, 200001, 200002, 200003]
    claims = {
        v.persistent_volume_claim.claim_name
        for v in current.spec.volumes
        if v.persistent_volume_claim
    }
    assert claims == {
        "aiinfn-home",
        "aiinfn-shared",
        "aiinfn-envs",
        "aiinfn-cvmfs",
        "aiinfn-juicefs",
        "aiinfn-project-cms-2dml",
        "aiinfn-project-lhcb-2dflashsim",
        "aiinfn-project-qml",
    }


async def test_ephemeral_scratch_gets_its_own_claim_from_the_controller(core, namespace):
    settings = StorageSettings(
        scratch_storage_class="aiinfn-scratch",
        public_claim="",
        envs_claim="",
        cvmfs_claim="",
        init_directories=False,
    )
    identity = Identity(100001)
    storage = volumes.build(settings, volumes.StorageUser("bob", identity), "75Gi", "1Gi", IMAGE)
    created = await core.create_namespaced_pod(namespace, notebook_pod("bob", storage, identity))

    async def scratch_claim():
        claims = await core.list_namespaced_persistent_volume_claim(namespace)
        return next((c for c in claims.items if c.metadata.name == "bob-scratch"), None)

    claim = await wait_until(scratch_claim, "the ephemeral-volume controller to make bob-scratch")
    assert claim.spec.storage_class_name == "aiinfn-scratch"
    assert claim.spec.resources.requests == {"storage": "75Gi"}
    assert claim.metadata.labels == {
        "app.kubernetes.io/managed-by": "aiinfn-hub",
        "app.kubernetes.io/component": "scratch",
    }
    assert [(o.kind, o.uid) for o in claim.metadata.owner_references] == [
        ("Pod", created.metadata.uid)
    ]


async def test_identity_store_is_one_record_for_every_replica(api_client, core, namespace):
    replicas = [IdentityStore(api_client, namespace) for _ in range(3)]
    people = ["alice", "Alice", "a_lice", "a.lice", "qml"]
    results = await asyncio.gather(
        *(store.identity(person, ["qml", "cms-ml"]) for store in replicas for person in people)
    )
    by_person: dict[str, set[int]] = {}
    for index, result in enumerate(results):
        by_person.setdefault(people[index % len(people)], set()).add(result.uid)
    assert all(len(uids) == 1 for uids in by_person.values()), by_person
    uids = [next(iter(u)) for u in by_person.values()]
    assert len(set(uids)) == len(people)
    fresh = IdentityStore(api_client, namespace)
    assert [await fresh.uid(p) for p in people] == uids
    assert await fresh.gid("qml") not in uids
    assert {r.group_gids["qml"] for r in results} == {await fresh.gid("qml")}
    record = await core.read_namespaced_config_map("aiinfn-identities", namespace)
    assert set(record.data) == {"users", "groups"}


# -- folders made as the user, whichever pod comes first (real processes, pod runner) ----------


@pytest.fixture(scope="session")
def pod_runner(devcluster):
    """Tests whose pods must really run (their init container making folders on the dev storage)."""
    _, cluster = devcluster
    if cluster is None or "pod-runner" not in {p.name for p in cluster.status().processes}:
        pytest.skip("needs the dev cluster's pod runner (docs/devcluster.md, Pod runner)")
    return cluster


def storage_pod(
    name: str, username: str, identity: Identity, command: str, projects: tuple[str, ...] = ()
) -> dict:
    """A notebook pod as the spawner builds it, running `command` once instead of JupyterLab."""
    user = volumes.StorageUser(username, identity, projects)
    pod = notebook_pod(name, volumes.build(StorageSettings(), user, "1Gi", "64Mi", IMAGE), identity)
    pod["spec"]["restartPolicy"] = "Never"
    pod["spec"]["containers"][0]["command"] = ["sh", "-c", command]
    return pod


async def run_pod(core, namespace: str, pod: dict):
    """Create the pod and wait until it has ended."""
    await core.create_namespaced_pod(namespace, pod)

    async def ended():
        current = await core.read_namespaced_pod(pod["metadata"]["name"], namespace)
        return current if current.status.phase in ("Succeeded", "Failed") else None

    return await wait_until(ended, f"pod {pod['metadata']['name']} to end")


async def refusal(core, namespace: str, pod) -> str:
    """The storage-init container's exit code and stderr, for a pod its refusal stopped."""
    [init] = pod.status.init_container_statuses
    assert pod.status.phase == "Failed" and init.state.terminated.exit_code == 1
    # FallbackToLogsOnError: the reason is also the container status's message (what the
    # spawner and `kubectl describe` show).
    assert "An admin must fix this" in init.state.terminated.message
    return await core.read_namespaced_pod_log(
        pod.metadata.name, namespace, container=volumes.INIT_CONTAINER
    )


def owner(path) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def job_manifest(
    username: str, identity: Identity, projects: tuple[str, ...], kinds: list[str], command: str
) -> dict:
    """The job service's batch Job for this user (as operations.JobService builds it), unsuspended
    and out of Kueue: the Job controller and the pod runner run it at once."""
    request = JobRequest(
        name="first", command=["sh", "-c", command], volumes=kinds, project=projects[0]
    )
    return unqueued_job(f"first-{username}", username, identity, projects, request, IMAGE)


async def test_a_job_before_the_first_notebook_makes_the_folders_as_the_user(
    pod_runner, core, batch, namespace, storage
):
    dora = Identity(100011, {"cms-ml": 200011})
    job = job_manifest(
        "dora",
        dora,
        ("cms-ml",),
        ["home", "projects"],
        "touch $HOME/from-job /home/shared/cms-ml/from-job",
    )
    await batch.create_namespaced_job(namespace, job)

    async def done():
        current = await batch.read_namespaced_job(job["metadata"]["name"], namespace)
        return current if (current.status.succeeded or current.status.failed) else None

    assert (await wait_until(done, "dora's job to end")).status.succeeded == 1
    folders = devstorage.claim_folders(storage)
    home, project = folders["aiinfn-home"] / "dora", folders["aiinfn-project-cms-2dml"] / "cms-2dml"
    # Made by the job's own storage-init, as dora: not root:root 0755 as the kubelet makes them.
    assert owner(home) == (100011, 100011, 0o700)
    assert owner(project)[1:] == (200011, 0o2770)
    assert owner(home / "from-job")[0] == 100011
    # Her first notebook finds them hers: its home and the project are writable.
    pod = await run_pod(
        core,
        namespace,
        storage_pod(
            "dora-notebook",
            "dora",
            dora,
            "touch $HOME/.local-test /home/shared/cms-ml/from-notebook",
            ("cms-ml",),
        ),
    )
    assert pod.status.phase == "Succeeded", pod.status
    assert owner(project / "from-notebook")[:2] == (100011, 200011)


@pytest.mark.parametrize(
    "made_by, message",
    [
        (
            (0, 0),
            "folder erin on claim aiinfn-home: it belongs to uid 0, not to this user (uid 100012)",
        ),
        (
            (100099, 100099),
            "folder erin on claim aiinfn-home: it belongs to uid 100099, not to this",
        ),
    ],
)
async def test_a_home_that_is_not_the_users_stops_the_pod_with_the_reason(
    pod_runner, core, namespace, storage, made_by, message
):
    home = devstorage.claim_folders(storage)["aiinfn-home"] / "erin"
    home.mkdir(mode=0o755)  # what the kubelet left when a pod without set-up came first
    os.chown(home, *made_by)
    pod = await run_pod(core, namespace, storage_pod("erin", "erin", Identity(100012), "touch ~/x"))
    log = await refusal(core, namespace, pod)
    assert message in log and "An admin must fix this before this pod can start." in log, log
    assert owner(home) == (*made_by, 0o755) and not os.listdir(home)


async def test_a_job_on_a_home_that_is_not_the_users_fails_with_the_reason(
    pod_runner, core, batch, namespace, storage
):
    home = devstorage.claim_folders(storage)["aiinfn-home"] / "finn"
    home.mkdir(mode=0o755)
    job = job_manifest("finn", Identity(100013, {"qml": 200013}), ("qml",), ["home"], "touch ~/x")
    await batch.create_namespaced_job(namespace, job)

    async def failed():
        current = await batch.read_namespaced_job(job["metadata"]["name"], namespace)
        return current if current.status.failed else None

    await wait_until(failed, "finn's job to fail")
    selector = f"job-name={job['metadata']['name']}"
    [pod] = (await core.list_namespaced_pod(namespace, label_selector=selector)).items
    log = await refusal(core, namespace, pod)
    assert (
        "folder finn on claim aiinfn-home: it belongs to uid 0, not to this user (uid 100013)"
        in log
    )
    assert not os.listdir(home)


async def test_a_lost_record_never_gives_one_users_files_to_another(
    pod_runner, api_client, core, namespace, storage
):
    bob = await IdentityStore(api_client, namespace).identity("bob", ["qml"])
    pod = await run_pod(core, namespace, storage_pod("bob-1", "bob", bob, "touch ~/mine", ("qml",)))
    assert pod.status.phase == "Succeeded"
    await core.delete_namespaced_config_map("aiinfn-identities", namespace)  # the record is lost

    store = IdentityStore(api_client, namespace)
    carol = await store.identity("carol", ["cms-ml"])
    assert carol.uid == bob.uid  # handed out again...
    pod = await run_pod(core, namespace, storage_pod("carol", "carol", carol, "ls ~", ("cms-ml",)))
    log = await refusal(core, namespace, pod)  # ...but never used
    assert f"uid {bob.uid} already owns another folder on this claim" in log, log
    home_root = devstorage.claim_folders(storage)["aiinfn-home"]
    assert not (home_root / "carol").exists()
    bob_again = await store.identity("bob", ["qml"])
    pod = await run_pod(core, namespace, storage_pod("bob-2", "bob", bob_again, "ls ~", ("qml",)))
    assert f"it belongs to uid {bob.uid}, not to this user (uid {bob_again.uid})" in await refusal(
        core, namespace, pod
    )

    # The admin's way back: the record rebuilt from who owns the folders.
    await core.delete_namespaced_config_map("aiinfn-identities", namespace)
    restored = await devstorage.restore_identities(api_client, namespace, storage)
    assert restored == identity.Tables({"bob": bob.uid}, {"qml": bob.group_gids["qml"]})
    assert await IdentityStore(api_client, namespace).identity("bob", ["qml"]) == bob
    pod = await run_pod(
        core, namespace, storage_pod("bob-3", "bob", bob, "test -f ~/mine", ("qml",))
    )
    assert pod.status.phase == "Succeeded"


async def test_uids_stay_with_the_files_across_a_dev_cluster_restart(devcluster, tmp_path):
    """A private cluster on kept storage, stopped (its etcd gone) and started again."""
    _, session_cluster = devcluster
    if session_cluster is None or "pod-runner" not in {
        p.name for p in session_cluster.status().processes
    }:
        pytest.skip("needs the built dev cluster with its pod runner")
    cluster = DevCluster(
        name=f"kept-storage-{os.getpid()}",
        port=free_port(),
        cache=session_cluster.cache,
        log=lambda message: None,
    )
    kept = tmp_path / "kept-storage"

    async def in_cluster(people: dict[str, tuple[str, ...]], command: str) -> dict[str, Identity]:
        """Storage set up on the kept folders; each person's identity, and a pod of theirs run."""
        api = await k8s.api_client(str(cluster.layout.admin_kubeconfig))
        async with api:
            core = client.CoreV1Api(api)
            await core.create_namespace(
                client.V1Namespace(
                    metadata=client.V1ObjectMeta(
                        name="kept", labels={labels.POD_SECURITY_ENFORCE: "restricted"}
                    )
                )
            )
            await wait_until(
                lambda: has_default_service_account(core, "kept"), "the service account"
            )
            documents = await devstorage.setup(api, "kept", kept)
            await wait_until(lambda: devstorage.claims_bound(api, "kept", documents), "the claims")
            store = IdentityStore(api, "kept")
            found = {}
            for person, projects in people.items():
                found[person] = await store.identity(person, projects)
                pod = await run_pod(
                    core,
                    "kept",
                    storage_pod(names.slug(person), person, found[person], command, projects),
                )
                assert pod.status.phase == "Succeeded", await core.read_namespaced_pod_log(
                    pod.metadata.name, "kept", container=volumes.INIT_CONTAINER
                )
            return found

    try:
        await asyncio.to_thread(cluster.up)
        before = await in_cluster({"alice": ("cms-ml",), "bob": ("qml",)}, "touch $HOME/kept")
        await asyncio.to_thread(cluster.down)
        # The stopped API server's socket lingers a moment after its process has gone.
        await wait_until(
            lambda: asyncio.to_thread(bindable, cluster.port), "the old API port to close"
        )
        await asyncio.to_thread(cluster.up)
        # carol comes first after the restart: she must not get alice's or bob's number.
        after = await in_cluster(
            {"carol": ("lhcb-flashsim",), "alice": ("cms-ml",), "bob": ("qml",)},
            "touch $HOME/again",
        )
    finally:
        await asyncio.to_thread(cluster.down)
    assert after["alice"] == before["alice"] and after["bob"] == before["bob"]
    assert after["carol"].uid not in {before["alice"].uid, before["bob"].uid}
    assert after["carol"].group_gids["lhcb-flashsim"] not in {
        *before["alice"].group_gids.values(),
        *before["bob"].group_gids.values(),
    }
    home_root = kept / "nfs" / "export" / "home"
    for person in ("alice", "bob"):
        assert owner(home_root / person / "kept")[0] == before[person].uid
        assert owner(home_root / person / "again")[0] == before[person].uid


@pytest.mark.parametrize("bad", ["a/b", "..", "-rf", "a\x00b", "a" * 300, "\u0430lice"])
async def test_bad_names_never_reach_the_record(api_client, core, namespace, bad):
    store = IdentityStore(api_client, namespace)
    with pytest.raises(names.InvalidName):
        await store.uid(bad)
    with pytest.raises(names.InvalidName):
        await tokens.sync(api_client, namespace, bad, "token")
    assert not (
        await core.list_namespaced_config_map(
            namespace, label_selector="app.kubernetes.io/component=identity"
        )
    ).items
    assert not (await core.list_namespaced_secret(namespace)).items


async def test_token_secret_is_written_rewritten_and_deleted(api_client, core, namespace):
    await tokens.sync(api_client, namespace, "Alice", "first-token")
    name = tokens.secret_name("Alice")
    secret = await core.read_namespaced_secret(name, namespace)
    assert secret.data == {"access_token": "Zmlyc3QtdG9rZW4="}
    assert secret.metadata.annotations == {"aiinfn.infn.it/owner-name": "Alice"}
    await tokens.sync(api_client, namespace, "Alice", "second-token")
    assert (await core.read_namespaced_secret(name, namespace)).data == {
        "access_token": "c2Vjb25kLXRva2Vu"
    }
    await tokens.sync(api_client, namespace, "alice", "someone-else")
    assert tokens.secret_name("alice") != name
    assert await tokens.delete(api_client, namespace, "Alice") is True
    assert await tokens.delete(api_client, namespace, "Alice") is False
    left = await core.list_namespaced_secret(
        namespace, label_selector="app.kubernetes.io/component=access-token"
    )
    assert [s.metadata.annotations["aiinfn.infn.it/owner-name"] for s in left.items] == ["alice"]


# -- through a real hub ------------------------------------------------------------------------

CRYPT_KEY = secrets.token_hex(32)
HUB_USERS = {
    "alice": {"groups": ["cms-ml"]},
    "bob": {"groups": ["lhcb-flashsim"]},
    "carol": {"groups": ["cms-ml", "lhcb-flashsim", "envs-admins"]},
    "a_lice": {"groups": []},
    "a.lice": {"groups": []},
    "-lead": {"groups": ["cms-ml"]},
    "a..b": {"groups": ["cms-ml"]},
    "\u0430lice": {"groups": ["cms-ml"]},
}
HUB_CONFIG = [
    "c.Authenticator.enable_auth_state = True",
    "c.KubeSpawner.poll_interval = 1",
    "c.AiInfnStorage.juicefs_claim = 'aiinfn-juicefs'",
    "c.AiInfnStorage.bucket_csi_driver = 'rclone.csi.example.org'",
    "c.AiInfnStorage.bucket_volume_attributes = {'bucket': 'user-{user_slug}'}",
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hub(devcluster, api_client, tmp_path_factory):
    kubeconfig, _ = devcluster
    async with hub_in_namespace(
        api_client,
        kubeconfig,
        tmp_path_factory.mktemp("hub"),
        HUB_USERS,
        {},
        [*HUB_CONFIG, *KWOK_NOTEBOOKS],
        {"JUPYTERHUB_CRYPT_KEY": CRYPT_KEY},
    ) as hub:
        yield hub


async def call(hub, method, path, body=None):
    return await asyncio.to_thread(hub.request, method, path, body)


def user_path(name: str) -> str:
    return f"/users/{urllib.parse.quote(name, safe='')}"


async def server_pod(core, hub, username):
    """The user's running pod, once KubeSpawner made it and the scheduler bound it."""

    async def running():
        pods = await core.list_namespaced_pod(
            hub.namespace, label_selector="component=singleuser-server"
        )
        for pod in pods.items:
            if (
                (pod.metadata.annotations or {}).get("hub.jupyter.org/username") == username
                and pod.status.phase == "Running"
                and not pod.metadata.deletion_timestamp
            ):
                return pod
        return None

    return await wait_until(running, f"{username}'s pod to run")


async def stop(hub, core, username):
    await call(hub, "DELETE", f"{user_path(username)}/server")

    async def gone():
        pods = await core.list_namespaced_pod(
            hub.namespace, label_selector="component=singleuser-server"
        )
        return not [
            p
            for p in pods.items
            if (p.metadata.annotations or {}).get("hub.jupyter.org/username") == username
        ]

    await wait_until(gone, f"{username}'s pod to go")


async def identity_record(core, hub):
    record = await core.read_namespaced_config_map("aiinfn-identities", hub.namespace)
    return json.loads(record.data["users"]), json.loads(record.data["groups"])


async def test_spawned_pod_carries_every_volume_with_the_recorded_owner(hub, core):
    status, body = await call(hub, "POST", "/users/carol/server", {})
    assert status in (201, 202), body
    try:
        pod = await server_pod(core, hub, "carol")
        users, groups = await identity_record(core, hub)
        assert {v.name for v in pod.spec.volumes} == {
            "home",
            "shared",
            "project-cms-2dml",
            "project-lhcb-2dflashsim",
            "envs",
            "scratch",
            "shm",
            "cvmfs",
            "juicefs",
        }
        context = pod.spec.security_context
        assert (context.run_as_user, context.run_as_group, context.fs_group) == (
            users["carol"],
        ) * 3
        assert context.supplemental_groups == sorted(
            groups[g] for g in ("cms-ml", "lhcb-flashsim", "envs-admins")
        )
        notebook = pod.spec.containers[0]
        assert notebook.security_context.run_as_user == users["carol"]
        assert notebook.security_context.allow_privilege_escalation is False
        envs = next(m for m in notebook.volume_mounts if m.name == "envs")
        assert not envs.read_only  # carol curates the environments
        assert [c.name for c in pod.spec.init_containers] == ["storage-init"]
        assert pod.spec.automount_service_account_token is False
        # The demo login has no auth_state: no token Secret, no token file, no bucket.
        assert not (await core.list_namespaced_secret(hub.namespace)).items
    finally:
        await stop(hub, core, "carol")


async def test_outside_a_project_there_is_no_project_volume_whatever_the_request(hub, core):
    for body in (
        {"projects": ["cms-ml"]},
        {
            "volumes": [
                {"name": "x", "persistentVolumeClaim": {"claimName": "aiinfn-project-cms-2dml"}}
            ]
        },
        {"accelerator": "cpu", "project": "cms-ml"},
    ):
        status, answer = await call(hub, "POST", "/users/bob/server", body)
        assert status == 400 and "unknown option(s)" in answer["message"], answer
    status, page = await asyncio.to_thread(
        spawn_form_post,
        hub,
        "bob",
        {"accelerator": "cpu", "size--cpu": "small", "project--cpu": "cms-ml"},
    )
    assert status == 400 and "unknown form field" in page
    assert not (await core.list_namespaced_pod(hub.namespace)).items

    status, page = await asyncio.to_thread(
        spawn_form_post, hub, "bob", {"accelerator": "cpu", "size--cpu": "small"}
    )
    assert status == 200, page[:300]
    try:
        pod = await server_pod(core, hub, "bob")
        volume_names = {v.name for v in pod.spec.volumes}
        assert "project-lhcb-2dflashsim" in volume_names
        assert not {"project-cms-2dml", "project-qml"} & volume_names
        _, groups = await identity_record(core, hub)
        assert pod.spec.security_context.supplemental_groups == [groups["lhcb-flashsim"]]
        envs = next(m for m in pod.spec.containers[0].volume_mounts if m.name == "envs")
        assert envs.read_only is True
    finally:
        await stop(hub, core, "bob")


def spawn_form_post(hub, user: str, fields: dict[str, str]) -> tuple[int, str]:
    """Submit the spawn form as the logged-in user's browser would (xsrf included)."""
    status, page = hub.page("/hub/spawn", user)
    xsrf = re.search(r'xsrf_token: "([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"_xsrf": xsrf, **fields}).encode()
    try:
        with hub.browsers[user].open(
            f"{hub.url}/hub/spawn/{user}", data=data, timeout=30
        ) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_look_alike_names_get_different_homes_and_uids(hub, core):
    homes, uids = {}, {}
    for user in ("alice", "a_lice", "a.lice"):
        status, body = await call(hub, "POST", f"{user_path(user)}/server", {})
        assert status in (201, 202), body
        try:
            pod = await server_pod(core, hub, user)
            homes[user] = next(
                m.sub_path for m in pod.spec.containers[0].volume_mounts if m.name == "home"
            )
            uids[user] = pod.spec.security_context.run_as_user
        finally:
            await stop(hub, core, user)
    assert homes == {"alice": "alice", "a_lice": "a-5flice", "a.lice": "a-2elice"}
    assert len(set(uids.values())) == 3


@pytest.mark.parametrize(
    "name", ["-lead", "a..b", "\u0430lice", "x" * 300, "nul\x00name", "sp ace"]
)
async def test_names_that_do_not_validate_are_refused_before_any_object(hub, core, name):
    if name not in HUB_USERS:  # the others logged in through the demo form
        status, body = await call(hub, "POST", "/users", {"usernames": [name]})
        assert status == 201, body  # the hub takes it: our spawner is what refuses it
    status, body = await call(hub, "POST", f"{user_path(name)}/server", {})
    assert status == 403 and "username" in body["message"], (status, body)
    assert not (await core.list_namespaced_pod(hub.namespace)).items
    assert not (await core.list_namespaced_secret(hub.namespace)).items
    try:
        users, _ = await identity_record(core, hub)
    except client.ApiException:
        users = {}
    assert name not in users


async def test_a_slash_never_reaches_the_spawner(hub):
    status, body = await call(hub, "POST", "/users", {"usernames": ["a/b"]})
    assert status == 400, body


async def test_the_token_secret_follows_the_hubs_refreshes(hub, core):
    first, second = f"at-{secrets.token_urlsafe(24)}", f"at-{secrets.token_urlsafe(24)}"
    refresh, id_token = f"rt-{secrets.token_urlsafe(24)}", f"id-{secrets.token_urlsafe(24)}"
    status, _ = await call(hub, "POST", "/users/dana", {})
    assert status == 201
    status, _ = await call(
        hub,
        "PATCH",
        "/users/dana",
        {
            "auth_state": {
                "access_token": first,
                "refresh_token": refresh,
                "id_token": id_token,
                "token_response": {"access_token": first, "refresh_token": refresh},
            }
        },
    )
    assert status == 200
    status, body = await call(hub, "POST", "/users/dana/server", {})
    assert status in (201, 202), body
    name = tokens.secret_name("dana")
    try:
        pod = await server_pod(core, hub, "dana")
        secret = await core.read_namespaced_secret(name, hub.namespace)
        assert secret.data == {"access_token": base64.b64encode(first.encode()).decode()}
        token_volume = next(v for v in pod.spec.volumes if v.name == "access-token")
        assert token_volume.secret.secret_name == name
        mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == "access-token")
        assert (mount.mount_path, mount.read_only, mount.sub_path) == (
            "/var/run/secrets/aiinfn",
            True,
            None,
        )
        bucket = next(v for v in pod.spec.volumes if v.name == "bucket")
        assert bucket.csi.node_publish_secret_ref.name == name
        spec_text = json.dumps(client.ApiClient().sanitize_for_serialization(pod))
        assert first not in spec_text and refresh not in spec_text
        assert {
            "name": "AIINFN_ACCESS_TOKEN_FILE",
            "value": "/var/run/secrets/aiinfn/access_token",
        } in [{"name": e.name, "value": e.value} for e in pod.spec.containers[0].env]

        status, _ = await call(
            hub,
            "PATCH",
            "/users/dana",
            {
                "auth_state": {
                    "access_token": second,
                    "refresh_token": refresh,
                    "id_token": id_token,
                }
            },
        )
        assert status == 200

        async def renewed():
            current = await core.read_namespaced_secret(name, hub.namespace)
            return base64.b64decode(current.data["access_token"]).decode() == second

        await wait_until(renewed, "the Secret to hold the refreshed token")
        assert set((await core.read_namespaced_secret(name, hub.namespace)).data) == {
            "access_token"
        }
    finally:
        await stop(hub, core, "dana")

    async def deleted():
        return not (await core.list_namespaced_secret(hub.namespace)).items

    await wait_until(deleted, "the token Secret to be deleted with the last server")
    log = hub.log()
    assert not any(secret_text in log for secret_text in (first, second, refresh, id_token))
