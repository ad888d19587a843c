"""Component command lines and configuration are pure builders, compared literally."""

from pathlib import Path

import yaml
from aiinfn_dev.devcluster import components, topology

LAYOUT = components.Layout(Path("/c"))
PORTS = components.Ports(
    apiserver=16443, etcd_client=1, etcd_peer=2, controller_manager=3, scheduler=4, kwok=5
)


def test_apiserver_binds_loopback_with_tls_rbac_and_pod_security():
    assert components.apiserver_argv(Path("/bin/kube-apiserver"), LAYOUT, PORTS) == [
        "/bin/kube-apiserver",
        "--etcd-servers=http://127.0.0.1:1",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--secure-port=16443",
        "--tls-cert-file=/c/pki/serving.crt",
        "--tls-private-key-file=/c/pki/serving.key",
        "--client-ca-file=/c/pki/ca.crt",
        "--service-account-key-file=/c/pki/sa.pub",
        "--service-account-signing-key-file=/c/pki/sa.key",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--admission-control-config-file=/c/admission.yaml",
        "--allow-privileged=true",
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--v=1",
    ]


def test_every_listener_is_on_loopback():
    argvs = [
        build(Path("/bin/x"), LAYOUT, PORTS)
        for build in (
            components.etcd_argv,
            components.apiserver_argv,
            components.controller_manager_argv,
            components.scheduler_argv,
            components.kwok_argv,
        )
    ]
    for argv in argvs:
        for arg in argv:
            if "address" in arg or "urls" in arg or "initial-cluster=" in arg:
                assert "127.0.0.1" in arg, arg
    assert "--cidr=127.64.0.0/14" in components.kwok_argv(Path("/bin/kwok"), LAYOUT, PORTS)


def test_pod_security_default_is_restricted():
    config = components.pod_security_admission()["plugins"][0]["configuration"]
    assert config["defaults"]["enforce"] == "restricted"
    assert config["exemptions"]["namespaces"] == ["kube-system"]


def test_kwok_config_takes_stages_from_the_library_and_drops_jitter(tmp_path):
    for relative in components.KWOK_STAGE_FILES:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        name = Path(relative).stem
        spec = {"delay": {"durationMilliseconds": 1000, "jitterDurationMilliseconds": 5000}}
        path.write_text(yaml.safe_dump({"kind": "Stage", "metadata": {"name": name}, "spec": spec}))
    documents = components.kwok_config(tmp_path, sites=())
    assert documents[0] == {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {
            "cidr": "127.64.0.0/14",
            "nodeIP": "127.0.0.1",
            "nodeLeaseDurationSeconds": 40,
            "nodeLeaseParallelism": 4,
            "podPlayStageParallelism": 4,
            "nodePlayStageParallelism": 4,
            "podsOnNodeSyncParallelism": 1,
            "enablePodsOnNodeSyncListPager": True,
            "enableDebuggingHandlers": True,
        },
    }
    stages = {d["metadata"]["name"]: d for d in documents[1:]}
    assert list(stages) == [
        "node-initialize",
        "node-heartbeat-with-lease",
        "pod-ready",
        "pod-complete",
        "pod-delete",
        "pod-stop",
    ]
    assert stages["pod-complete"]["spec"]["delay"] == {"durationMilliseconds": 1000}
    assert stages["pod-ready"]["spec"]["delay"] == {
        "durationMilliseconds": 0,
        "durationFrom": {
            "expressionFrom": '.metadata.annotations["pod-ready.stage.kwok.x-k8s.io/delay"]'
        },
    }


def _pod_stage(name, expressions):
    return {
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": expressions},
            "weight": 1,
            "delay": {"durationMilliseconds": 1000},
            "next": {"statusTemplate": "phase: Running"},
        },
    }


def test_each_site_gets_its_start_runtime_and_failure_stages_by_node_name(tmp_path):
    phase = {"key": ".status.phase", "operator": "In", "values": ["Running"]}
    for relative in components.KWOK_STAGE_FILES:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(_pod_stage(Path(relative).stem, [phase])))
    site = components.SiteBehaviour("vk-a", 100, 200, 1000, 500, 30)
    stages = {
        d["metadata"]["name"]: d["spec"]
        for d in components.kwok_config(tmp_path, ["runner"], sites=[site])[1:]
    }
    node = {"key": ".spec.nodeName", "operator": "In", "values": ["vk-a"]}
    not_sites = {"key": ".spec.nodeName", "operator": "NotIn", "values": ["vk-a"]}
    runner = {"key": ".spec.containers.[0].image", "operator": "NotIn", "values": ["runner"]}
    assert stages["pod-ready"]["selector"]["matchExpressions"] == [phase, not_sites, runner]
    assert stages["pod-complete"]["selector"]["matchExpressions"] == [phase, not_sites, runner]
    unfinalized = {"key": ".metadata.finalizers", "operator": "DoesNotExist"}
    assert stages["pod-delete"]["selector"]["matchExpressions"] == [
        phase,
        unfinalized,
        not_sites,
        runner,
    ]
    stopping = [
        {"key": ".metadata.deletionTimestamp", "operator": "Exists"},
        {"key": ".metadata.finalizers", "operator": "Exists"},
        {"key": ".status.phase", "operator": "In", "values": ["Pending", "Running"]},
    ]
    assert stages["pod-stop"]["selector"]["matchExpressions"] == [*stopping, not_sites, runner]
    assert "exitCode: 143" in stages["pod-stop"]["next"]["statusTemplate"]
    # The runner's images annotated for kwok: the same local stages, for those pods only.
    given = [
        {"key": ".spec.containers.[0].image", "operator": "In", "values": ["runner"]},
        {
            "key": f'.metadata.annotations["{components.PLAYED_BY_ANNOTATION}"]',
            "operator": "In",
            "values": ["kwok"],
        },
    ]
    for name in ("pod-ready", "pod-complete", "pod-delete", "pod-stop"):
        copy = stages[f"{name}-given-to-kwok"]
        assert copy["selector"]["matchExpressions"] == [
            *stages[name]["selector"]["matchExpressions"][:-1],
            *given,
        ]
        assert {k: v for k, v in copy.items() if k != "selector"} == {
            k: v for k, v in stages[name].items() if k != "selector"
        }
    # A site plays every pod bound to it, the runner's images included (the runner leaves them).
    assert stages["pod-delete-remote"]["selector"]["matchExpressions"] == [
        phase,
        unfinalized,
        node,
    ]
    assert stages["pod-stop-remote"]["selector"]["matchExpressions"] == [*stopping, node]
    assert stages["pod-stop-remote"]["next"] == stages["pod-stop"]["next"]
    assert stages["pod-ready-vk-a"]["selector"]["matchExpressions"] == [phase, node]
    assert stages["pod-ready-vk-a"]["delay"] == {
        "durationMilliseconds": 100,
        "jitterDurationMilliseconds": 300,
    }
    annotation = '.metadata.annotations["pod-complete.stage.kwok.x-k8s.io/{}"]'
    forced, succeeds = (
        '[.spec.containers[].env[]? | select(.name == "DEVCLUSTER_SITE_OUTCOME" and '
        f'.value == "{outcome}")] | length > 0'
        for outcome in ("fail", "succeed")
    )
    runtime = (
        'first(.spec.containers[].env[]? | select(.name == "DEVCLUSTER_SITE_RUNTIME") | .value'
        " | strings)"
    )
    complete, fail = stages["pod-complete-vk-a"], stages["pod-fail-vk-a"]
    assert complete["delay"] == {
        "durationMilliseconds": 1000,
        "durationFrom": {"expressionFrom": f"{annotation.format('delay')} // {runtime}"},
        "jitterDurationMilliseconds": 1500,
        "jitterDurationFrom": {
            "expressionFrom": f"{annotation.format('jitter-delay')} // "
            f'{annotation.format("delay")} // ({runtime} + "500ms")'
        },
    }
    assert fail["delay"] == complete["delay"]
    assert "weight" not in complete and "weight" not in fail
    assert complete["weightFrom"] == {
        "expressionFrom": f'if {forced} then "0" elif {succeeds} then "1000" else "970" end'
    }
    assert fail["weightFrom"] == {
        "expressionFrom": f'if {forced} then "1000" elif {succeeds} then "0" else "30" end'
    }
    assert fail["selector"] == complete["selector"]
    assert complete["next"] == {"statusTemplate": "phase: Running"}
    assert "phase: Failed" in fail["next"]["statusTemplate"]
    assert "exitCode: 1" in fail["next"]["statusTemplate"]


def test_the_sites_are_the_ai_infn_topologys_virtual_nodes():
    virtual = [
        n["metadata"]["name"]
        for n in topology.node_manifests("ai-infn")
        if "virtual-node.interlink/site" in n["metadata"]["labels"]
    ]
    assert [s.node for s in components.SITES] == virtual
    for site in components.SITES:
        assert 0 <= site.failure_permille < 1000


def test_kubeconfig_names_one_client_certificate_user():
    config = components.kubeconfig(
        "https://127.0.0.1:16443", Path("/c/ca.crt"), Path("/c/a.crt"), Path("/c/a.key"), "someone"
    )
    assert config["users"] == [
        {"name": "someone", "user": {"client-certificate": "/c/a.crt", "client-key": "/c/a.key"}}
    ]
    assert config["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:16443",
        "certificate-authority": "/c/ca.crt",
    }
