"""End-to-end tests of the container: build the image, `compose up`, check every promise.

Collected only when ATTNLAB_CONTAINER_TESTS=1 (scripts/test-container sets it), so a plain
`pytest tests` never starts containers. When collected, nothing is skipped: a missing tool
or image is an error.

Environment (scripts/test-container fills it in):
  ATTNLAB_CONTAINER_TESTS=1   collect these tests
  ATTNLAB_ENGINE              podman (default) or docker
  ATTNLAB_BASE_IMAGE          base image to build on (default: the official TF 2.9 image;
                              with podman, the stand-in from tests/container/standin)
  ATTNLAB_OTHER_UID           a UID other than root and 1000 that owns the second checkout
                              of the focused ownership test (default 4321)
  ATTNLAB_E2E_NAME            compose project name and image tag prefix (default attnlab-e2e),
                              so that two checkouts can run this stage side by side
  ATTNLAB_E2E_JUPYTER_PORT, ATTNLAB_E2E_SSH_PORT
                              host ports of the stack (default 18888, 12222; the focused
                              ownership test uses the next ones)
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ENABLED = os.environ.get("ATTNLAB_CONTAINER_TESTS") == "1"
collect_ignore_glob = [] if ENABLED else ["test_*.py"]

REPO = Path(__file__).resolve().parents[2]
PROJECT_NAME = os.environ.get("ATTNLAB_E2E_NAME", "attnlab-e2e")
IMAGE_REF = "localhost/attnlab-workbench:" + PROJECT_NAME
JUPYTER_PORT = int(os.environ.get("ATTNLAB_E2E_JUPYTER_PORT", "18888"))
SSH_PORT = int(os.environ.get("ATTNLAB_E2E_SSH_PORT", "12222"))
METRICS = {}


def run(cmd, check=True, timeout=600, **kwargs):
    """Runs a command, returns the CompletedProcess (text); raises with its output on failure."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.STDOUT)
    result = subprocess.run(cmd, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError("command failed (%d): %s\n%s" % (
            result.returncode, " ".join(map(str, cmd)), result.stdout))
    return result


class Engine:
    """The container engine and its compose front end (podman + podman-compose, or docker)."""

    def __init__(self, name):
        self.name = name
        if name == "podman":
            self.compose_cmd = [shutil.which("podman-compose") or "podman-compose"]
            self.build_args = ["--podman-build-args", "--network host --format docker"]
        elif name == "docker":
            self.compose_cmd = ["docker", "compose"]
            self.build_args = []
        else:
            raise pytest.UsageError("ATTNLAB_ENGINE must be podman or docker, not %r" % name)

    def __call__(self, *args, **kwargs):
        return run([self.name] + list(args), **kwargs)

    def compose(self, project, *args, **kwargs):
        cmd = list(self.compose_cmd) + ["-p", PROJECT_NAME]
        if args and args[0] == "build":
            cmd += self.build_args
        return run(cmd + list(args), cwd=str(project), **kwargs)

    def health(self, container):
        """Runs the image's healthcheck now; returns (healthy, output)."""
        if self.name == "podman":
            result = self("healthcheck", "run", container, check=False, timeout=60)
            return result.returncode == 0, result.stdout
        result = self("inspect", "-f", "{{json .State.Health}}", container, check=False)
        state = json.loads(result.stdout or "null") or {}
        return state.get("Status") == "healthy", result.stdout


@pytest.fixture(scope="session")
def engine():
    name = os.environ.get("ATTNLAB_ENGINE", "podman")
    eng = Engine(name)
    for tool in [name, eng.compose_cmd[0], "ssh", "ssh-keygen", "ssh-keyscan"]:
        assert shutil.which(tool), "%s is not installed (scripts/test-container installs it)" % tool
    return eng


@pytest.fixture(scope="session")
def ids(project):
    """UID and GID of the container user, as scripts/make-env chose them."""
    return project["ids"]


@pytest.fixture(scope="session")
def base_image(engine):
    ref = os.environ.get("ATTNLAB_BASE_IMAGE", "tensorflow/tensorflow:2.9.0-gpu-jupyter")
    engine("image", "inspect", ref)
    return ref


@pytest.fixture(scope="session")
def workdir():
    # Under /var/tmp with mode 755: the container user (a different UID) must reach it.
    path = Path(tempfile.mkdtemp(prefix="attnlab-e2e.", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(str(path), ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_key(workdir):
    folder = workdir / "client"
    folder.mkdir(mode=0o700)
    key = folder / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "attnlab-e2e", "-f", str(key)])
    return key


def copy_checkout(root):
    """The working tree (tracked and untracked, not ignored) copied to `root`, owned by the
    user running the tests (root), without tests/container."""
    files = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=str(REPO)).stdout.split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file() and not name.startswith("tests/container/"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(str(source), str(root / name))


def make_env(root, ssh_key, image_ref, base_image, jupyter_port, ssh_port):
    """scripts/make-env run as root (no -u/-g) plus the test settings; -> (token, uid, gid)."""
    run([str(root / "scripts" / "make-env"), "-o", str(root / ".env"), "-k",
         str(ssh_key) + ".pub"])
    with (root / ".env").open("a") as env:
        env.write("\n# e2e test settings\n")
        env.write("ATTNLAB_IMAGE=%s\n" % image_ref)
        env.write("BASE_IMAGE=%s\n" % base_image)
        env.write("JUPYTER_PORT=%d\nSSH_PORT=%d\n" % (jupyter_port, ssh_port))
        # The corporate-proxy build option, exercised for real: the host's CA bundle
        # (with this machine's proxy CA) as the extra_ca build secret.
        env.write("ATTNLAB_EXTRA_CA=/etc/ssl/certs/ca-certificates.crt\n")
    text = (root / ".env").read_text()
    token = re.search(r"^JUPYTER_TOKEN=(\S+)$", text, re.M).group(1)
    uid, gid = (int(re.search(r"^%s=(\d+)$" % name, text, re.M).group(1))
                for name in ("ATTNLAB_UID", "ATTNLAB_GID"))
    return token, uid, gid


@pytest.fixture(scope="session")
def project(workdir, ssh_key, base_image):
    """A checkout as a root user on a GPU server has it: everything owned by root, a .env
    from scripts/make-env run as root, and secrets and state lying around that must never
    reach the image (planted markers)."""
    root = workdir / "attnlab"
    copy_checkout(root)
    planted = {
        ".git/config": "git-marker-6f1d0c",
        "runs/old-run/checkpoints/ckpt-1.index": "checkpoint-marker-91ab22",
        "id_ed25519": ssh_key.read_text(),
        "notebooks/.env": "JUPYTER_TOKEN=nested-env-marker-55e0",
        "attnlab/.ipynb_checkpoints/scratch.py": "ipynb-checkpoint-marker-7d3a",
    }
    for name, text in planted.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    token, uid, gid = make_env(root, ssh_key, IMAGE_REF, base_image, JUPYTER_PORT, SSH_PORT)
    markers = {"token": token, "private key": ssh_key.read_text().splitlines()[1]}
    for name, text in planted.items():
        markers[name] = text.splitlines()[-1] if name != "id_ed25519" else markers["private key"]
    return {"root": root, "token": token, "markers": markers, "ids": (uid, gid)}


@pytest.fixture(scope="session")
def image(engine, project):
    """The real Dockerfile built through docker-compose.yml (build args from .env)."""
    started = time.monotonic()
    result = engine.compose(project["root"], "build", timeout=3600)
    METRICS["image build (compose build), s"] = round(time.monotonic() - started, 1)
    ref = IMAGE_REF
    engine("image", "inspect", ref)
    return {"ref": ref, "build_log": result.stdout}


def wait_healthy(engine, container, timeout=240):
    started = time.monotonic()
    output = ""
    while time.monotonic() - started < timeout:
        healthy, output = engine.health(container)
        if healthy:
            return time.monotonic() - started
        time.sleep(1)
    logs = engine("logs", container, check=False).stdout
    raise AssertionError("not healthy after %ds: %s\n--- logs ---\n%s" % (timeout, output, logs))


def container_of(engine):
    ids = engine("ps", "-q", "--filter", "label=com.docker.compose.project=" + PROJECT_NAME)
    found = ids.stdout.split()
    assert len(found) == 1, "expected one running container, found %r" % found
    return found[0]


@pytest.fixture(scope="session")
def stack(engine, project, image):
    """`compose up -d` from docker-compose.yml; yields the running container's id."""
    root = project["root"]
    engine.compose(root, "down", "-v", check=False, timeout=300)
    started = time.monotonic()
    engine.compose(root, "up", "-d", timeout=600)
    container = container_of(engine)
    wait_healthy(engine, container)
    METRICS["compose up -> healthy, s"] = round(time.monotonic() - started, 1)
    yield {"id": container, "root": root, "token": project["token"]}
    logs = engine("logs", container, check=False).stdout
    (root.parent / "container.log").write_text(logs)
    engine.compose(root, "down", "-v", check=False, timeout=300)


def http(path, token=None, port=JUPYTER_PORT, timeout=30, method="GET", json_body=None,
         raw_headers=False):
    """A request to http://127.0.0.1:PORT/PATH without following redirects -> (status,
    headers, body); headers as a dict, or the message itself (all Set-Cookie lines) when
    raw_headers."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    data = None if json_body is None else json.dumps(json_body).encode()
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                     method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", "token " + token)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read().decode("utf-8", "replace")
            headers = response.headers if raw_headers else dict(response.headers)
            return response.status, headers, body
    except urllib.error.HTTPError as error:
        headers = error.headers if raw_headers else dict(error.headers)
        return error.code, headers, error.read().decode("utf-8", "replace")


def pytest_terminal_summary(terminalreporter):
    if METRICS:
        terminalreporter.section("attnlab container metrics")
        for name, value in METRICS.items():
            terminalreporter.write_line("%s: %s" % (name, value))
