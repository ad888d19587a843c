"""Certificates carry the identities Kubernetes reads; processes are found and stopped by pid."""

import ipaddress
import shutil
import socket
import subprocess
import sys
import time

import pytest
from aiinfn_dev.devcluster import pki, processes
from aiinfn_dev.devcluster.cluster import DEFAULT_PORT
from aiinfn_dev.devcluster.errors import DevClusterError
from cryptography import x509
from cryptography.x509.oid import NameOID


def test_pki_identities_and_serving_names(tmp_path):
    pki.create_pki(tmp_path)
    admin = x509.load_pem_x509_certificate((tmp_path / "admin.crt").read_bytes())
    assert (
        admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    )
    scheduler = x509.load_pem_x509_certificate((tmp_path / "kube-scheduler.crt").read_bytes())
    assert (
        scheduler.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == "system:kube-scheduler"
    )
    serving = x509.load_pem_x509_certificate((tmp_path / "serving.crt").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert oct((tmp_path / "ca.key").stat().st_mode & 0o777) == "0o600"


def test_start_and_stop_by_pid(tmp_path):
    sleeper = tmp_path / "sleeper"
    shutil.copy(shutil.which("sleep"), sleeper)
    proc = processes.start("sleeper", [str(sleeper), "60"], tmp_path / "logs" / "sleeper.log")
    assert proc.alive()
    processes.stop([proc], grace=5)
    assert not proc.alive()


def test_a_reused_pid_is_not_ours(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        impostor = processes.Running("etcd", other.pid, "/nonexistent/etcd")
        assert not impostor.alive()
        processes.stop([impostor], grace=0.1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_sigterm_resistant_process_is_killed(tmp_path):
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = processes.start("stubborn", [sys.executable, "-c", script], tmp_path / "stubborn.log")
    while "ready" not in (tmp_path / "stubborn.log").read_text():
        time.sleep(0.05)
    processes.stop([proc], grace=0.5)
    assert not proc.alive()


def test_port_in_use_is_a_one_line_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(DevClusterError, match=f"port {port} on 127.0.0.1 .* --port") as error:
            processes.require_free(port, "kube-apiserver", "--port")
        assert "\n" not in str(error.value)


def test_a_clusters_ports_are_a_block_below_the_ephemeral_range_picked_by_its_api_port():
    block = processes.PortBlock(16444, bindable=lambda port: True)
    first = processes.PORT_BLOCK_BASE + 16444 % processes.PORT_BLOCKS * processes.PORT_BLOCK_SIZE
    assert [block.take() for _ in range(3)] == [first, first + 1, first + 2]
    assert first + processes.PORT_BLOCK_SIZE <= 32768
    # Clusters started at once (consecutive API ports) take different blocks.
    assert processes.PortBlock(16445, bindable=lambda port: True).take() == (
        first + processes.PORT_BLOCK_SIZE
    )


def test_a_block_another_program_uses_is_skipped_and_a_full_one_is_a_clear_error():
    first = processes.PORT_BLOCK_BASE + 16444 % processes.PORT_BLOCKS * processes.PORT_BLOCK_SIZE
    block = processes.PortBlock(16444, bindable=lambda port: port != first + 5)
    assert block.take() == first + processes.PORT_BLOCK_SIZE
    for _ in range(processes.PORT_BLOCK_SIZE - 1):
        block.take()
    with pytest.raises(DevClusterError, match="more than 16 ports"):
        block.take()
    with pytest.raises(DevClusterError, match="no free block of 16 ports"):
        processes.PortBlock(16444, bindable=lambda port: False)


def test_free_ports_are_below_the_clusters_and_the_ephemeral_range_and_never_repeat():
    ports = [processes.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(processes.SERVER_PORTS.start <= port < DEFAULT_PORT for port in ports)
    assert processes.SERVER_PORTS.stop <= min(DEFAULT_PORT, processes.PORT_BLOCK_BASE)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", ports[0]))
        listener.listen()
