"""attnlab.doctor: each failing condition, faked, gives its row and the fix that names it."""
import io
import os
import socket
import subprocess
import sys

import pytest

from attnlab import doctor
from attnlab.train import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD_ENV = ("JUPYTER_TOKEN=abc123\nSSH_AUTHORIZED_KEYS=\"ssh-ed25519 AAAA me@host\"\n"
            "ATTNLAB_UID=1001\nATTNLAB_GID=1002\n"
            "COMPOSE_FILE=docker-compose.yml:docker-compose.gpu.yml\n")


class FakeSystem(doctor.System):
    """A machine where everything works unless a test says otherwise."""

    def __init__(self, **overrides):
        self.inside = False
        self.tf = ("2.9.0", "11.2", "8", ["/physical_device:GPU:0"])
        self.devices = ["/dev/nvidia0"]
        self.programs = {"nvidia-smi", "nvidia-ctk"}
        self.unwritable = set()
        self.owners = {}
        self.files = {"/checkout/.env": GOOD_ENV, doctor.TOKEN_FILE: "t0ken",
                      os.path.expanduser("~/.ssh/authorized_keys"): "ssh-ed25519 AAAA me\n"}
        self.busy = set()
        self.verifying = {"stock", "host"}
        self.network = True
        self.__dict__.update(overrides)

    def inside_container(self):
        return self.inside

    def tensorflow(self):
        return self.tf

    def nvidia_devices(self):
        return self.devices

    def which(self, program):
        return "/usr/bin/" + program if program in self.programs else None

    def writable(self, path):
        return os.path.basename(path) not in self.unwritable

    def owner(self, path):
        return self.owners.get(os.path.basename(path), (1001, 1002))

    def ids(self):
        return 1001, 1002

    def read(self, path):
        return self.files.get(path)

    def port_free(self, address, port):
        return port not in self.busy

    def tls_verifies(self, cafile):
        if not self.network:
            raise OSError("Network is unreachable")
        return ("host" if cafile == "/etc/ssl/certs/ca-certificates.crt" else "stock") \
            in self.verifying


def rows(system, checkout="/checkout"):
    return {c.name: c for c in doctor.run_checks(system, checkout)}


def test_everything_fine_on_the_host_and_inside():
    host = rows(FakeSystem())
    assert list(host) == ["TensorFlow", "GPU", "Mounts", "Token", "SSH keys", "Ports",
                          "Build CA"]
    assert {c.status for c in host.values()} == {doctor.OK}, host
    inside = rows(FakeSystem(inside=True), checkout=None)
    assert list(inside) == ["TensorFlow", "GPU", "Mounts", "Token", "SSH keys"]
    assert {c.status for c in inside.values()} == {doctor.OK}, inside
    assert inside["TensorFlow"].detail == "2.9.0 (CUDA 11.2, cuDNN 8)"


def test_no_gpu_in_the_container_points_to_the_gpu_override():
    check = rows(FakeSystem(inside=True, tf=("2.9.0", "11.2", "8", []), devices=[]))["GPU"]
    assert check.status == doctor.WARN
    assert "no NVIDIA device" in check.detail
    assert "-f docker-compose.gpu.yml" in check.fix and "Container Toolkit" in check.fix


def test_gpu_devices_but_a_cpu_build_of_tensorflow():
    check = rows(FakeSystem(inside=True, tf=("2.9.0", None, None, [])))["GPU"]
    assert check.status == doctor.FAIL and "CPU build" in check.detail
    assert "gpu-jupyter" in check.fix


def test_host_gpu_without_toolkit_and_without_override():
    no_toolkit = rows(FakeSystem(programs={"nvidia-smi"}))["GPU"]
    assert no_toolkit.status == doctor.FAIL and "NVIDIA Container Toolkit" in no_toolkit.fix
    env = GOOD_ENV.replace("COMPOSE_FILE=docker-compose.yml:docker-compose.gpu.yml\n", "")
    no_override = rows(FakeSystem(files={"/checkout/.env": env}))["GPU"]
    assert no_override.status == doctor.WARN
    assert "COMPOSE_FILE=docker-compose.yml:docker-compose.gpu.yml" in no_override.fix
    no_driver = rows(FakeSystem(programs=set()))["GPU"]
    assert no_driver.status == doctor.WARN and "CPU only" in no_driver.detail


def test_unwritable_mount_inside_names_it_and_the_chown():
    check = rows(FakeSystem(inside=True, unwritable={"runs"}))["Mounts"]
    assert check.status == doctor.FAIL and check.detail.endswith(": runs")
    assert check.fix == "on the host, in the checkout: sudo chown -R 1001:1002 runs"


def test_host_folders_of_another_owner_or_missing():
    check = rows(FakeSystem(owners={"notebooks": (0, 0), "data": (1000, 1000)}))["Mounts"]
    assert check.status == doctor.FAIL and "notebooks, data" in check.detail
    assert check.fix.startswith("sudo chown -R 1001:1002 notebooks data")
    missing = rows(FakeSystem(owners={"data": None}))["Mounts"]
    assert missing.status == doctor.WARN and "missing: data" in missing.detail


def test_missing_or_empty_token():
    unset = rows(FakeSystem(files={"/checkout/.env": "ATTNLAB_UID=1001\nATTNLAB_GID=1002\n"}))
    assert unset["Token"].status == doctor.WARN and "scripts/make-env" in unset["Token"].fix
    assert unset["SSH keys"].status == doctor.WARN
    assert "-k ~/.ssh/id_ed25519.pub" in unset["SSH keys"].fix
    empty = rows(FakeSystem(files={"/checkout/.env": GOOD_ENV + "JUPYTER_TOKEN=\n"}))["Token"]
    assert empty.status == doctor.FAIL and "refuses to start" in empty.detail
    inside = rows(FakeSystem(inside=True, files={}), checkout=None)
    assert inside["Token"].status == doctor.FAIL
    ssh = inside["SSH keys"]
    assert ssh.status == doctor.WARN and "SSH_AUTHORIZED_KEYS" in ssh.fix


def test_busy_port_is_reported_with_its_setting():
    env = GOOD_ENV + "SSH_PORT=2200\n"
    check = rows(FakeSystem(busy={2200}, files={"/checkout/.env": env}))["Ports"]
    assert check.status == doctor.WARN and "127.0.0.1:2200" in check.detail
    assert "SSH_PORT" in check.fix


def test_port_free_sees_a_real_listening_socket():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        assert doctor.System().port_free("127.0.0.1", port) is False
    assert doctor.System().port_free("127.0.0.1", port) is True


def test_proxy_ca_needed_for_the_build():
    if doctor.stock_ca_bundle() is None:
        pytest.skip("pip's CA bundle is not importable here")
    check = rows(FakeSystem(verifying={"host"}))["Build CA"]
    assert check.status == doctor.FAIL and "ATTNLAB_EXTRA_CA=" in check.fix
    given = GOOD_ENV + "ATTNLAB_EXTRA_CA=/etc/ssl/certs/ca-certificates.crt\n"
    assert rows(FakeSystem(verifying={"host"}, files={"/checkout/.env": given}))[
        "Build CA"].status == doctor.OK
    offline = rows(FakeSystem(network=False))["Build CA"]
    assert offline.status == doctor.WARN and "pypi.org" in offline.detail


def test_report_lists_fixes_and_exit_status_follows_failures(monkeypatch, tmp_path):
    out = io.StringIO()
    assert doctor.main("/checkout", FakeSystem(unwritable={"data"}, inside=True), out) == 1
    text = out.getvalue()
    assert "Mounts      FAIL  not writable by uid 1001: data" in text
    assert "To fix:\n  Mounts: on the host, in the checkout: sudo chown -R 1001:1002 data" in text
    # The CLI verb runs the same checks (here on a faked machine where only SSH is off).
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    system = FakeSystem(files={str(tmp_path / ".env"): "ATTNLAB_UID=1001\nATTNLAB_GID=1002\n"
                               "JUPYTER_TOKEN=x\nCOMPOSE_FILE=docker-compose.gpu.yml\n"})
    monkeypatch.setattr(doctor, "System", lambda: system)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["doctor"]) == 0


def test_read_env_file():
    env = doctor.read_env_file("# c\nA=1\nB=\"x y\"\nC='z'\n\nD=\nnot a line\n")
    assert env == {"A": "1", "B": "x y", "C": "z", "D": ""}


def test_without_tensorflow_a_row_says_so_and_nothing_imports_it(tmp_path):
    """A host Python without TensorFlow (-S: no site-packages) gets the row, not a crash."""
    script = (
        "import sys\n"
        "from attnlab import doctor\n"
        "class Offline(doctor.System):\n"
        "    def inside_container(self):\n"
        "        return False\n"
        "    def tls_verifies(self, cafile):\n"
        "        raise OSError('offline')\n"
        "checks = doctor.run_checks(Offline(), sys.argv[1])\n"
        "print([tuple(c[:3]) for c in checks if c.name == 'TensorFlow'])\n"
        "print('tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-S", "-c", script, str(tmp_path)],
                            env=dict(os.environ, PYTHONPATH=REPO), cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        "[('TensorFlow', 'warn', 'not installed here')]", "False"], result.stdout
