"""`attnlab doctor`: what works in this workbench, and the fix for what does not.

Runs on the host (in the checkout) and inside the container; it checks the side it runs on:

    attnlab doctor                      # inside: docker compose exec workbench attnlab doctor
    python -m attnlab doctor --checkout PATH

Each check gives one row (ok, warn or FAIL, a detail and, when not ok, the fix). The exit
status is 1 when a row FAILs: a warning (no GPU on a CPU machine, SSH off) is a choice.
TensorFlow is imported only when it is installed; a host without it gets a row saying so.
"""
import errno
import glob
import importlib.util
import os
import shutil
import socket
import ssl
import sys
from collections import namedtuple

OK, WARN, FAIL = "ok", "warn", "FAIL"
GPU_OVERRIDE = "docker-compose.gpu.yml"
TOKEN_FILE = "/var/lib/attnlab/run/jupyter-token"
WRITABLE = ("notebooks", "runs", "data")
ENTRYPOINT = "/usr/local/bin/attnlab-entrypoint"
BUILD_INDEX = ("pypi.org", 443)

Check = namedtuple("Check", "name status detail fix")


class System:
    """What the checks ask of the machine, in one place so that tests can fake any of it."""

    def inside_container(self):
        return os.path.exists(ENTRYPOINT)

    def tensorflow(self):
        """(version, CUDA version or None, cuDNN version or None, GPU names), or None when
        TensorFlow is not installed."""
        if importlib.util.find_spec("tensorflow") is None:
            return None
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        build = dict(tf.sysconfig.get_build_info())
        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
        return tf.__version__, build.get("cuda_version"), build.get("cudnn_version"), gpus

    def nvidia_devices(self):
        return glob.glob("/dev/nvidia[0-9]*")

    def which(self, program):
        return shutil.which(program)

    def writable(self, path):
        return os.access(path, os.W_OK)

    def owner(self, path):
        """(uid, gid) of path, or None when it does not exist."""
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        return info.st_uid, info.st_gid

    def ids(self):
        return os.getuid(), os.getgid()

    def read(self, path):
        """The text of path, or None when it cannot be read."""
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None

    def port_free(self, address, port):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, port))
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return False
                raise
        return True

    def tls_verifies(self, cafile):
        """Whether a TLS connection to the package index verifies with the CA bundle
        `cafile` (None: Python's default store). Raises OSError when it cannot connect."""
        context = ssl.create_default_context(cafile=cafile)
        try:
            with socket.create_connection(BUILD_INDEX, timeout=5) as sock:
                with context.wrap_socket(sock, server_hostname=BUILD_INDEX[0]):
                    return True
        except ssl.SSLCertVerificationError:
            return False


def read_env_file(text):
    """KEY=VALUE lines of a compose .env (quotes stripped, comments skipped) -> dict."""
    values = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def check_tensorflow(system, inside):
    found = system.tensorflow()
    if found is None:
        where = ("the image is broken: rebuild it with docker compose build" if inside else
                 "it is in the container: docker compose exec workbench attnlab doctor")
        return Check("TensorFlow", FAIL if inside else WARN, "not installed here", where), None
    version, cuda, cudnn, _ = found
    if cuda:
        detail = "%s (CUDA %s, cuDNN %s)" % (version, cuda, cudnn or "?")
    else:
        detail = "%s (a CPU build: no CUDA)" % version
    return Check("TensorFlow", OK, detail, ""), found


def check_gpu_inside(system, found):
    if found is None:
        return Check("GPU", WARN, "unknown: TensorFlow is missing", "")
    gpus = found[3]
    if gpus:
        return Check("GPU", OK, "%d visible to TensorFlow" % len(gpus), "")
    if not system.nvidia_devices():
        return Check("GPU", WARN, "none: the container has no NVIDIA device",
                     "start with the GPU override (needs the NVIDIA Container Toolkit on "
                     "the host): docker compose -f docker-compose.yml -f %s up -d, or "
                     "COMPOSE_FILE=docker-compose.yml:%s in .env" % (GPU_OVERRIDE, GPU_OVERRIDE))
    if not found[1]:
        return Check("GPU", FAIL, "NVIDIA devices present, but TensorFlow is a CPU build",
                     "build on the GPU image: BASE_IMAGE=tensorflow/tensorflow:2.9.0-gpu-jupyter")
    return Check("GPU", FAIL, "NVIDIA devices present, but TensorFlow sees none",
                 "the host driver is too old for CUDA %s: check nvidia-smi on the host"
                 % found[1])


def check_gpu_host(system, env):
    if not system.which("nvidia-smi"):
        return Check("GPU", WARN, "no NVIDIA driver on this host (nvidia-smi): CPU only", "")
    if not (system.which("nvidia-ctk") or system.which("nvidia-container-cli")):
        return Check("GPU", FAIL, "a GPU, but no NVIDIA Container Toolkit",
                     "install the NVIDIA Container Toolkit, then restart Docker")
    compose_files = os.environ.get("COMPOSE_FILE") or env.get("COMPOSE_FILE", "")
    if GPU_OVERRIDE not in compose_files:
        return Check("GPU", WARN, "a GPU and the toolkit, but compose does not ask for it",
                     "add COMPOSE_FILE=docker-compose.yml:%s to .env" % GPU_OVERRIDE)
    return Check("GPU", OK, "GPU, toolkit and %s" % GPU_OVERRIDE, "")


def check_mounts_inside(system, workspace="/workspace"):
    uid, gid = system.ids()
    bad = [name for name in WRITABLE if not system.writable(os.path.join(workspace, name))]
    if not bad:
        return Check("Mounts", OK, "%s writable by uid %d" % (", ".join(WRITABLE), uid), "")
    return Check("Mounts", FAIL, "not writable by uid %d: %s" % (uid, ", ".join(bad)),
                 "on the host, in the checkout: sudo chown -R %d:%d %s" % (uid, gid, " ".join(bad)))


def check_mounts_host(system, checkout, env):
    uid, gid = int(env.get("ATTNLAB_UID", 1000)), int(env.get("ATTNLAB_GID", 1000))
    missing, wrong = [], []
    for name in WRITABLE:
        owner = system.owner(os.path.join(checkout, name))
        if owner is None:
            missing.append(name)
        elif owner != (uid, gid):
            wrong.append(name)
    if wrong:
        return Check("Mounts", FAIL, "not owned by the container user %d:%d: %s"
                     % (uid, gid, ", ".join(wrong)),
                     "sudo chown -R %d:%d %s (or, as root: scripts/make-env -f)"
                     % (uid, gid, " ".join(wrong)))
    if missing:
        return Check("Mounts", WARN, "missing: %s (Docker would create them as root)"
                     % ", ".join(missing), "scripts/make-env -f, or mkdir %s" % " ".join(missing))
    return Check("Mounts", OK, "%s owned by the container user %d:%d"
                 % (", ".join(WRITABLE), uid, gid), "")


def check_token_inside(system):
    if (system.read(TOKEN_FILE) or "").strip():
        return Check("Token", OK, "Jupyter has a token", "")
    return Check("Token", FAIL, "no token file %s" % TOKEN_FILE,
                 "start the container through its entrypoint (docker compose up)")


def check_token_host(env):
    if "JUPYTER_TOKEN" not in env:
        return Check("Token", WARN, "not set: a new random token at each start",
                     "keep one: scripts/make-env (or JUPYTER_TOKEN=... in .env)")
    if not env["JUPYTER_TOKEN"].strip():
        return Check("Token", FAIL, "JUPYTER_TOKEN is empty: the container refuses to start",
                     "scripts/make-env -f, or delete the JUPYTER_TOKEN line in .env")
    return Check("Token", OK, "set in .env", "")


def check_ssh_inside(system):
    keys = system.read(os.path.join(os.path.expanduser("~"), ".ssh", "authorized_keys"))
    if keys and keys.strip():
        return Check("SSH keys", OK, "%d authorized key(s)" % len(keys.strip().splitlines()), "")
    return Check("SSH keys", WARN, "none: SSH is off",
                 "set SSH_AUTHORIZED_KEYS in .env, then docker compose up -d")


def check_ssh_host(env):
    if env.get("SSH_AUTHORIZED_KEYS", "").strip() or env.get("SSH_AUTHORIZED_KEYS_FILE"):
        return Check("SSH keys", OK, "set in .env", "")
    return Check("SSH keys", WARN, "none in .env: SSH will be off",
                 "scripts/make-env -f -k ~/.ssh/id_ed25519.pub")


def check_ports(system, env):
    busy = []
    for name, bind, default in (("JUPYTER_PORT", "JUPYTER_BIND", 8888),
                                ("SSH_PORT", "SSH_BIND", 2222)):
        port = int(env.get(name, default))
        address = env.get(bind, "127.0.0.1")
        if not system.port_free(address, port):
            busy.append("%s:%d" % (address, port))
    if busy:
        return Check("Ports", WARN, "in use: %s (fine if it is this workbench)" % ", ".join(busy),
                     "stop what holds them, or set JUPYTER_PORT / SSH_PORT in .env")
    return Check("Ports", OK, "Jupyter and SSH ports are free", "")


def check_build_ca(system, env, host_bundle="/etc/ssl/certs/ca-certificates.crt"):
    """pip in the build trusts the base image's CAs only (plus the extra_ca secret): a proxy
    that intercepts TLS needs its CA passed as ATTNLAB_EXTRA_CA."""
    if env.get("ATTNLAB_EXTRA_CA"):
        return Check("Build CA", OK, "ATTNLAB_EXTRA_CA=%s" % env["ATTNLAB_EXTRA_CA"], "")
    stock = stock_ca_bundle()
    if stock is None:
        return Check("Build CA", WARN, "cannot tell: pip is not installed here", "")
    try:
        if system.tls_verifies(stock):
            return Check("Build CA", OK, "%s:%d verifies without an extra CA" % BUILD_INDEX, "")
        if system.tls_verifies(host_bundle):
            return Check("Build CA", FAIL, "a proxy intercepts TLS: the build's pip will fail",
                         "add ATTNLAB_EXTRA_CA=%s (or your proxy's CA file) to .env"
                         % host_bundle)
    except OSError as err:
        return Check("Build CA", WARN, "cannot reach %s (%s)" % (BUILD_INDEX[0], err),
                     "the build needs PyPI: check the network or proxy settings")
    return Check("Build CA", FAIL, "%s does not verify with any CA bundle here" % BUILD_INDEX[0],
                 "put your proxy's CA (PEM) in a file and set ATTNLAB_EXTRA_CA to it in .env")


def stock_ca_bundle():
    """The public CA bundle (certifi's, which pip in a fresh image also trusts), if here."""
    try:
        import certifi
    except ImportError:
        try:
            from pip._vendor import certifi
        except ImportError:
            return None
    return certifi.where()


def find_checkout(start):
    """The folder at or above `start` holding docker-compose.yml, else None."""
    path = os.path.abspath(start)
    while True:
        if os.path.isfile(os.path.join(path, "docker-compose.yml")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def run_checks(system=None, checkout=None):
    """Every check for the side this runs on -> list of Check."""
    system = system or System()
    inside = system.inside_container()
    tf_row, found = check_tensorflow(system, inside)
    if inside:
        return [tf_row, check_gpu_inside(system, found), check_mounts_inside(system),
                check_token_inside(system), check_ssh_inside(system)]
    if checkout is None:
        raise ValueError("outside the container, doctor needs the checkout (the folder with "
                         "docker-compose.yml): run it there or pass --checkout")
    env = read_env_file(system.read(os.path.join(checkout, ".env")))
    return [tf_row, check_gpu_host(system, env), check_mounts_host(system, checkout, env),
            check_token_host(env), check_ssh_host(env), check_ports(system, env),
            check_build_ca(system, env)]


def format_report(checks):
    """The table, then one fix line per row that is not ok."""
    width = max(len(c.name) for c in checks)
    lines = ["%s  %-4s  %s" % (c.name.ljust(width), c.status, c.detail) for c in checks]
    fixes = [c for c in checks if c.status != OK and c.fix]
    if fixes:
        lines += ["", "To fix:"] + ["  %s: %s" % (c.name, c.fix) for c in fixes]
    return "\n".join(lines)


def main(checkout=None, system=None, out=None):
    """Prints the report; 1 when a check failed, else 0."""
    system = system or System()
    if checkout is None and not system.inside_container():
        checkout = find_checkout(os.getcwd()) or find_checkout(os.path.dirname(__file__))
    checks = run_checks(system, checkout)
    print(format_report(checks), file=out or sys.stdout)
    return 1 if any(c.status == FAIL for c in checks) else 0
