"""The container's promises, checked with real clients against `compose up` (see conftest).

Tests run in file order; the last ones stop and restart the stack.
"""
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from .conftest import (
    IMAGE_REF,
    JUPYTER_PORT,
    METRICS,
    PROJECT_NAME,
    SSH_PORT,
    container_of,
    copy_checkout,
    http,
    make_env,
    run,
    wait_healthy,
)

STATE_KEYS = "/var/lib/attnlab/ssh-host-keys"
TOKEN_FOR_JUPYTER = "/var/lib/attnlab/run/jupyter-token"


# --- helpers ------------------------------------------------------------------------------

def ssh_cmd(key, user="researcher", known_hosts=None, extra=()):
    return ["ssh", "-p", str(SSH_PORT), "-i", str(key), "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=20",
            "-o", "StrictHostKeyChecking=yes" if known_hosts else "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=%s" % (known_hosts or "/dev/null"),
            "-o", "LogLevel=ERROR"] + list(extra) + ["%s@127.0.0.1" % user]


def ssh(key, command, check=True, **kwargs):
    return run(ssh_cmd(key, **kwargs) + [command], check=check, timeout=600)


def host_key_line():
    scan = run(["ssh-keyscan", "-p", str(SSH_PORT), "-t", "ed25519", "127.0.0.1"]).stdout
    return [line.split(None, 1)[1] for line in scan.splitlines() if not line.startswith("#")][0]


def in_container(engine, container, *command, check=True, timeout=600, env=None):
    env_args = []
    for name, value in (env or {}).items():
        env_args += ["-e", "%s=%s" % (name, value)]
    return engine("exec", *env_args, container, *command, check=check, timeout=timeout)


def image_env(engine, ref):
    config = json.loads(engine("image", "inspect", ref).stdout)[0]["Config"]
    return dict(item.split("=", 1) for item in config["Env"])


def run_once(engine, image, *args, env=None, volumes=(), timeout=120):
    """`run --rm` the image with the given command; returns the CompletedProcess."""
    cmd = ["run", "--rm", "--network", "none", "--no-healthcheck"]
    for name, value in (env or {}).items():
        cmd += ["-e", "%s=%s" % (name, value)]
    for volume in volumes:
        cmd += ["-v", volume]
    return engine(*(cmd + [image["ref"]] + list(args)), check=False, timeout=timeout)


# --- the image ----------------------------------------------------------------------------

def test_base_image_apt_get_update_fails_as_expected(engine, base_image):
    """The stand-in reproduces the official image's broken NVIDIA apt sources."""
    result = engine("run", "--rm", "--network", "host", base_image, "apt-get", "update",
                    check=False, timeout=300)
    assert result.returncode != 0, result.stdout
    assert "developer.download.nvidia.com" in result.stdout


def test_image_apt_get_update_works_and_tools_are_there(engine, image):
    result = engine("run", "--rm", "--network", "host", "--user", "0", "--entrypoint", "bash",
                    image["ref"], "-c",
                    "apt-get update -q && command -v tini sshd tmux && "
                    "! ls /etc/apt/sources.list.d/ | grep -E 'cuda|nvidia'",
                    check=False, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "/usr/bin/tini" in result.stdout


def test_image_metadata(engine, image, base_image):
    info = json.loads(engine("image", "inspect", image["ref"]).stdout)[0]
    config = info["Config"]
    assert config["Entrypoint"][:3] == ["tini", "-g", "--"]
    assert config["User"] != "" and config["User"].split(":")[0] not in ("0", "root")
    assert config["WorkingDir"] == "/workspace"
    healthcheck = config.get("Healthcheck") or info.get("Healthcheck")  # docker | podman
    assert "attnlab-healthcheck" in " ".join(healthcheck["Test"])
    base = json.loads(engine("image", "inspect", base_image).stdout)[0]
    METRICS["image size, MB"] = round(info["Size"] / 1e6)
    METRICS["image size added over the base, MB"] = round((info["Size"] - base["Size"]) / 1e6)


def test_no_host_keys_token_or_secrets_in_any_image_layer(engine, image, project, workdir):
    """Every layer the Dockerfile added is read file by file: no planted secret, no .env,
    no SSH host or private key, no token made its way into the image."""
    export = workdir / "image-export"
    engine("save", "--format", "docker-dir", "--uncompressed", "-o", str(export), image["ref"],
           timeout=900)
    base_layers = set(json.loads(engine("image", "inspect", project_base(project)).stdout)[0]
                      ["RootFS"]["Layers"])
    manifest = json.loads((export / "manifest.json").read_text())
    layers = [layer["digest"] for layer in manifest["layers"]]
    ours = [digest for digest in layers if digest not in base_layers]
    assert ours and len(ours) < len(layers), (len(ours), len(layers))

    needles = {name: text.encode() for name, text in project["markers"].items()}
    # The build trusted the host's CA bundle through the extra_ca secret; certificates that
    # no bundle in the image has (this machine's proxy CA) must not be stored anywhere.
    in_image = engine("run", "--rm", "--network", "none", "--no-healthcheck", "--entrypoint",
                      "sh", image["ref"], "-c", "cat /etc/ssl/certs/ca-certificates.crt; "
                      "find / -xdev -name cacert.pem -exec cat {} + 2>/dev/null; true",
                      stderr=subprocess.PIPE).stdout
    host_certs = re.findall(r"-----BEGIN CERTIFICATE-----\n(.+?)-----END",
                            Path("/etc/ssl/certs/ca-certificates.crt").read_text(), re.S)
    extra = [cert for cert in host_certs if cert not in in_image]
    METRICS["host CA certificates absent from the image (proxy CAs), checked"] = len(extra)
    for number, cert in enumerate(extra):
        needles["extra CA certificate %d" % number] = cert.splitlines()[1].encode()
    bad_names = re.compile(r"(^|/)(\.env|\.env\..*|id_ed25519.*|id_rsa.*|authorized_keys|"
                           r"ssh_host_.*|attnlab-ca\.pem|extra_ca|jpserver-.*\.json)$")
    found = []
    for digest in ours:
        path = export / digest.split(":", 1)[1]
        with tarfile.open(str(path)) as layer:
            for member in layer:
                if bad_names.search(member.name):
                    found.append("%s: file %s" % (digest[:19], member.name))
                if not member.isfile() or member.size > 200 * 1024 * 1024:
                    continue
                data = layer.extractfile(member).read()
                for name, needle in needles.items():
                    if needle in data:
                        found.append("%s: %s contains the %s" % (digest[:19], member.name, name))
    assert not found, "\n".join(found)


def project_base(project):
    env = (project["root"] / ".env").read_text()
    return re.search(r"^BASE_IMAGE=(\S+)$", env, re.M).group(1)


def test_empty_token_is_refused(engine, image, workdir):
    for value in ("", "   "):
        result = run_once(engine, image, env={"JUPYTER_TOKEN": value})
        assert result.returncode != 0, result.stdout
        assert "token is empty" in result.stdout
    empty_file = workdir / "empty-token"
    empty_file.write_text("\n")
    empty_file.chmod(0o644)
    result = run_once(engine, image, env={"JUPYTER_TOKEN_FILE": "/run/token"},
                      volumes=["%s:/run/token:ro" % empty_file])
    assert result.returncode != 0 and "token is empty" in result.stdout, result.stdout


def test_token_file_newline_is_stripped(engine, image, workdir):
    token_file = workdir / "token"
    token_file.write_text("s3cret-from-file\r\n")
    token_file.chmod(0o644)
    result = run_once(engine, image, "python3", "-c",
                      "import os; print(repr(open(%r).read()))" % TOKEN_FOR_JUPYTER,
                      env={"JUPYTER_TOKEN_FILE": "/run/token"},
                      volumes=["%s:/run/token:ro" % token_file])
    assert result.returncode == 0, result.stdout
    assert "'s3cret-from-file'" in result.stdout


def test_token_is_given_to_jupyter_in_a_file_of_the_user_only(engine, image):
    result = run_once(engine, image, "bash", "-c",
                      "echo file: $(stat -c '%%a %%U' %s) $(cat %s); "
                      "echo token variables: $(env | grep -c JUPYTER_TOKEN)"
                      % (TOKEN_FOR_JUPYTER, TOKEN_FOR_JUPYTER),
                      env={"JUPYTER_TOKEN": "in-env-token"})
    assert result.returncode == 0, result.stdout
    assert "\nfile: 600 researcher in-env-token\n" in result.stdout, result.stdout
    assert "\ntoken variables: 0\n" in result.stdout, result.stdout


def test_an_unwritable_mount_is_named_at_start_with_the_fix(engine, image, workdir):
    """A data folder the container user cannot write (here: root's) is named in the log
    with the one host command that fixes it."""
    folder = workdir / "root-owned-data"
    folder.mkdir(mode=0o755)
    result = run_once(engine, image, "id", "-u", volumes=["%s:/workspace/data" % folder])
    assert result.returncode == 0, result.stdout
    uid = re.search(r"^(\d+)$", result.stdout, re.M).group(1)
    assert "/workspace/data is not writable by uid %s" % uid in result.stdout, result.stdout
    assert re.search(r"sudo chown -R %s:\d+ data\n" % uid, result.stdout), result.stdout
    assert "/workspace/runs is not writable" not in result.stdout, result.stdout


def test_without_token_a_random_one_is_printed_and_without_key_ssh_is_off(engine, image):
    result = run_once(engine, image, "true")
    assert result.returncode == 0, result.stdout
    assert re.search(r"/lab\?token=[0-9a-f]{64}\b", result.stdout), result.stdout
    assert "SSH is off" in result.stdout and "SSH_AUTHORIZED_KEYS" in result.stdout


def test_host_keys_are_made_per_volume_and_kept(engine, image):
    def host_key(volume):
        result = run_once(engine, image, "cat", STATE_KEYS + "/ssh_host_ed25519_key.pub",
                          volumes=["%s:%s" % (volume, STATE_KEYS)])
        assert result.returncode == 0, result.stdout
        return re.search(r"ssh-ed25519 \S+", result.stdout).group(0)

    volumes = ["attnlab-e2e-keys-a", "attnlab-e2e-keys-b"]
    for volume in volumes:
        engine("volume", "rm", "-f", volume, check=False)
    try:
        first, second = host_key(volumes[0]), host_key(volumes[1])
        assert first != second, "two fresh volumes got the same host key"
        assert host_key(volumes[0]) == first, "the host key changed across restarts"
    finally:
        for volume in volumes:
            engine("volume", "rm", "-f", volume, check=False)
    bare = engine("run", "--rm", "--network", "none", "--no-healthcheck", "--entrypoint", "sh",
                  image["ref"], "-c", "ls -A %s; ls /etc/ssh | grep ssh_host_ || true" % STATE_KEYS,
                  stderr=subprocess.PIPE)
    assert bare.stdout.strip() == "", "the image carries host keys: %s" % bare.stdout


def test_healthcheck_asks_the_server(engine, image):
    """Without a Jupyter server the healthcheck fails (it is not a fixed-URL probe)."""
    name = "attnlab-e2e-nojupyter"
    engine("rm", "-f", name, check=False)
    engine("run", "-d", "--name", name, "--network", "none", image["ref"], "sleep", "300")
    try:
        time.sleep(2)
        healthy, output = engine.health(name)
        assert not healthy, output
    finally:
        engine("rm", "-f", "-t", "0", name, check=False)


# --- the running stack (docker-compose.yml) ------------------------------------------------

def test_pid1_is_tini_and_nothing_runs_as_root(engine, stack, ids):
    uid, _ = ids
    script = (
        "import os\n"
        "for pid in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):\n"
        "    try:\n"
        "        cmd = open('/proc/%d/cmdline' % pid, 'rb').read().replace(b'\\0', b' ')\n"
        "        status = open('/proc/%d/status' % pid).read()\n"
        "        uid = status.split('Uid:')[1].split()[0]\n"
        "    except OSError:\n"
        "        continue\n"
        "    print(pid, uid, cmd.decode(errors='replace').replace('\\n', ' ').strip())\n")
    table = in_container(engine, stack["id"], "python3", "-c", script).stdout
    rows = [line.split(" ", 2) for line in table.strip().splitlines()]
    assert rows[0][0] == "1" and rows[0][2].split()[0].endswith("tini"), table
    assert all(row[1] == str(uid) for row in rows), "a process is not UID %d:\n%s" % (uid, table)
    assert any("jupyter-lab" in row[2] or "jupyter lab" in row[2] for row in rows), table
    assert any("sshd" in row[2] for row in rows), table


def test_ports_are_published_on_loopback_only(engine, stack):
    ports = json.loads(engine("inspect", stack["id"]).stdout)[0]["NetworkSettings"]["Ports"]
    published = [binding for bindings in ports.values() for binding in (bindings or [])]
    assert len(published) == 2, ports
    assert all(binding["HostIp"] == "127.0.0.1" for binding in published), ports


def test_jupyter_requires_the_token(stack):
    token = stack["token"]
    status, _, _ = http("/api/contents")
    assert status == 403
    status, _, _ = http("/api/contents", token="wrong-" + token)
    assert status == 403
    status, headers, _ = http("/lab")
    assert status in (302, 403), status
    if status == 302:
        assert "/login" in headers.get("Location", ""), headers
    status, _, body = http("/api/contents", token=token)
    assert status == 200 and '"content"' in body
    status, _, body = http("/lab?token=" + token)
    assert status == 200 and "JupyterLab" in body


def test_tensorboard_is_behind_the_token(stack):
    status, _, _ = http("/tensorboard/")
    assert status in (302, 403), status
    status, _, body = http("/tensorboard/data/logdir", token=stack["token"], timeout=180)
    assert status == 200, body[:2000]
    assert json.loads(body)["logdir"] == "/workspace/runs"


def test_tensorboard_cannot_be_framed_by_other_sites_and_finds_its_fonts(stack):
    status, headers, body = http("/tensorboard/", token=stack["token"], timeout=180)
    assert status == 200, body[:2000]
    policy = headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in policy, policy
    fonts = re.findall(r"url\(([^)]*font-roboto/[^)]+)\)", body)
    assert fonts, "no font in TensorBoard's page"
    assert not [url for url in fonts if url.startswith("/")], fonts
    status, _, _ = http("/tensorboard/" + fonts[0], token=stack["token"])
    assert status == 200


def test_healthcheck_reports_healthy(engine, stack):
    healthy, output = engine.health(stack["id"])
    assert healthy, output


def test_ssh_logs_in_with_the_key_and_imports_attnlab(stack, ssh_key, engine, ids, workdir):
    # The host key the server shows is the one whose fingerprint the log printed.
    scan = run(["ssh-keyscan", "-p", str(SSH_PORT), "-t", "ed25519", "127.0.0.1"]).stdout
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(scan)
    fingerprint = run(["ssh-keygen", "-l", "-f", str(known_hosts)]).stdout.split()[1]
    assert fingerprint in engine("logs", stack["id"]).stdout

    out = ssh(ssh_key, "id -u; python -c 'import attnlab; print(attnlab.__file__)'",
              known_hosts=known_hosts).stdout.split()
    assert out[0] == str(ids[0])
    assert out[1] == "/workspace/attnlab/__init__.py"


def test_ssh_sessions_see_the_image_environment(stack, ssh_key, engine, image):
    env = image_env(engine, image["ref"])
    wanted = ["PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "LANG"]
    wanted += [name for name in env if name.startswith(("CUDA_", "NVIDIA_"))]
    assert {"PATH", "LD_LIBRARY_PATH", "PYTHONPATH"} <= set(env), env
    script = "; ".join("printf '%%s=%%s\\n' %s \"$%s\"" % (n, n) for n in wanted)
    for command in (script, "bash -lc %s" % shlex.quote(script)):  # plain command, login shell
        seen = dict(line.split("=", 1) for line in ssh(ssh_key, command).stdout.splitlines())
        for name in wanted:
            if name in env:
                assert seen.get(name) == env[name], (command, name, seen.get(name), env[name])
        assert "JUPYTER_TOKEN" not in ssh(ssh_key, "env").stdout


def test_ssh_password_and_root_logins_are_refused(stack, ssh_key):
    result = run(["ssh", "-v", "-p", str(SSH_PORT), "-o", "BatchMode=yes",
                  "-o", "PubkeyAuthentication=no", "-o", "StrictHostKeyChecking=no",
                  "-o", "UserKnownHostsFile=/dev/null",
                  "-o", "PreferredAuthentications=password,keyboard-interactive",
                  "researcher@127.0.0.1", "true"], check=False, timeout=60)
    assert result.returncode != 0
    offered = re.findall(r"Authentications that can continue: (\S+)", result.stdout)
    assert offered and all(methods == "publickey" for methods in offered), result.stdout
    root = ssh(ssh_key, "id -u", user="root", check=False)
    assert root.returncode != 0 and "Permission denied" in root.stdout, root.stdout


def test_files_written_into_bind_mounts_belong_to_the_host_user(stack, ssh_key, ids):
    ssh(ssh_key, "mkdir -p /workspace/runs/e2e && echo hello > /workspace/runs/e2e/owned.txt")
    written = stack["root"] / "runs" / "e2e" / "owned.txt"
    assert written.read_text() == "hello\n"
    stat = written.stat()
    assert (stat.st_uid, stat.st_gid) == ids


def test_make_env_as_root_gives_the_writable_folders_to_a_user_of_no_host_account(project):
    """The checkout belongs to root (a root user on a GPU server): make-env picks a UID that
    is neither root nor a host account's (UID 1000 may be someone's) and gives it notebooks/,
    runs/ and data/, so that the workbench can write them without a manual chown."""
    uid, gid = project["ids"]
    assert uid != 0 and gid != 0
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)
    for folder in ("notebooks", "runs", "data"):
        for path in [project["root"] / folder] + list((project["root"] / folder).rglob("*")):
            assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), path
    assert project["root"].stat().st_uid == 0


def save_notebook_with_checkpoint(token, port=JUPYTER_PORT, name="e2e-saved.ipynb"):
    """Saves a notebook into notebooks/ through Jupyter's API, then makes its checkpoint
    (notebooks/.ipynb_checkpoints): what JupyterLab does on the first save."""
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = "/api/contents/notebooks/" + name
    status, _, body = http(path, token=token, port=port, method="PUT",
                           json_body={"type": "notebook", "format": "json",
                                      "content": notebook})
    assert status in (200, 201), (status, body[:2000])
    status, _, body = http(path + "/checkpoints", token=token, port=port, method="POST",
                           json_body={})
    assert status == 201, (status, body[:2000])


def test_jupyter_saves_notebooks_in_a_root_owned_checkout(stack):
    saved = stack["root"] / "notebooks" / "e2e-saved.ipynb"
    try:
        save_notebook_with_checkpoint(stack["token"])
        assert saved.exists()
        assert list((stack["root"] / "notebooks" / ".ipynb_checkpoints").glob("e2e-saved*"))
    finally:
        # Not a shipped notebook: the notebook and unit tests below must not find it.
        saved.unlink()
        shutil.rmtree(str(stack["root"] / "notebooks" / ".ipynb_checkpoints"))


def test_ssh_sessions_start_in_workspace_and_runs_default_to_the_mounted_folder(stack, ssh_key,
                                                                                 ids):
    """`ssh ...` lands in /workspace (relative config paths work) and `attnlab runs` lists
    the mounted runs folder from any directory."""
    probe = stack["root"] / "runs" / "e2e-ssh-probe"
    probe.mkdir()
    (probe / "status.json").write_text(json.dumps({"state": "finished", "epoch": 3}))
    for path in (probe, probe / "status.json"):
        os.chown(str(path), *ids)
    out = ssh(ssh_key, "pwd; test -r configs/tiny_reverse.yaml && echo config-found; "
                       "attnlab runs; cd /tmp && attnlab runs").stdout
    lines = out.splitlines()
    assert lines[0] == "/workspace", out
    assert lines[1] == "config-found", out
    assert out.count("e2e-ssh-probe") == 2, out
    login = ssh(ssh_key, "bash -lc pwd").stdout.split()
    assert login == ["/workspace"], login


def test_no_capability_and_no_new_privileges_for_any_process(engine, stack):
    """compose drops every capability and sets no-new-privileges: the bounding, permitted
    and effective sets of every process are empty and NoNewPrivs is 1."""
    script = (
        "import os\n"
        "for pid in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):\n"
        "    try:\n"
        "        fields = dict(line.split(':', 1) for line in open('/proc/%d/status' % pid))\n"
        "    except OSError:\n"
        "        continue\n"
        "    print(pid, *(fields[k].strip() for k in ('CapBnd', 'CapPrm', 'CapEff', "
        "'NoNewPrivs', 'Name')))\n")
    table = in_container(engine, stack["id"], "python3", "-c", script).stdout
    rows = [line.split() for line in table.strip().splitlines()]
    assert len(rows) >= 3, table
    for row in rows:
        assert row[1:4] == ["0000000000000000"] * 3, "a process has capabilities:\n" + table
        assert row[4] == "1", "a process may gain privileges:\n" + table


def test_login_cookie_is_samesite(stack):
    status, headers, _ = http("/lab?token=" + stack["token"], raw_headers=True)
    assert status == 200
    cookies = [c for c in headers.get_all("Set-Cookie") or [] if c.startswith("username-")]
    assert cookies, headers
    assert all("samesite=lax" in c.lower() for c in cookies), cookies


def running_kernel_environment(engine, stack):
    """Starts a kernel through Jupyter's API; -> (the kernel process' environment as Jupyter
    gave it, the kernel id)."""
    status, _, body = http("/api/kernels", token=stack["token"], method="POST",
                           json_body={"name": "python3"})
    assert status == 201, body
    kernel = json.loads(body)["id"]
    script = (
        "import json, os, sys, time\n"
        "for _ in range(120):\n"
        "    for pid in (p for p in os.listdir('/proc') if p.isdigit()):\n"
        "        try:\n"
        "            cmd = open('/proc/%s/cmdline' % pid, 'rb').read()\n"
        "            environ = open('/proc/%s/environ' % pid, 'rb').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if b'ipykernel' in cmd and sys.argv[1].encode() in cmd:\n"
        "            print(json.dumps(dict(item.decode().split('=', 1)\n"
        "                                  for item in environ.split(b'\\0') if b'=' in item)))\n"
        "            sys.exit(0)\n"
        "    time.sleep(0.5)\n"
        "sys.exit('no kernel process ' + sys.argv[1])\n")
    result = in_container(engine, stack["id"], "python3", "-c", script, kernel)
    return json.loads(result.stdout.strip().splitlines()[-1]), kernel


def test_kernels_and_server_processes_do_not_have_the_token(engine, stack):
    environment, kernel = running_kernel_environment(engine, stack)
    try:
        assert "JUPYTER_TOKEN" not in environment, sorted(environment)
        assert stack["token"] not in json.dumps(environment)
        # TensorFlow in a notebook: warnings, but no INFO lines on stderr.
        script = ("import tensorflow as tf; "
                  "print(float(tf.reduce_sum(tf.ones([4, 4]) @ tf.ones([4, 4]))))")
        result = in_container(engine, stack["id"], "env", "-i",
                              *["%s=%s" % item for item in environment.items()],
                              "python3", "-c", script)
        assert result.stdout.strip().splitlines()[-1] == "64.0", result.stdout
        assert not re.search(r"^\S+ \S+: I tensorflow/", result.stdout, re.M), result.stdout
    finally:
        http("/api/kernels/" + kernel, token=stack["token"], method="DELETE")
    # `ps e`: the environment of every process but tini and the entrypoint shell (started
    # with the container's environment, as is this `exec`) is free of the token.
    script = (
        "import os, sys\n"
        "for pid in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):\n"
        "    if pid == os.getpid():\n"
        "        continue\n"
        "    try:\n"
        "        cmd = open('/proc/%d/cmdline' % pid, 'rb').read().replace(b'\\0', b' ')\n"
        "        environ = open('/proc/%d/environ' % pid, 'rb').read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    print(pid, sys.argv[1].encode() in environ, cmd.decode(errors='replace')[:80])\n")
    table = in_container(engine, stack["id"], "python3", "-c", script, stack["token"]).stdout
    holders = [line for line in table.splitlines() if line.split()[1] == "True"]
    assert all(("tini" in line or "attnlab-entrypoint" in line) for line in holders), table
    assert any("jupyter" in line for line in table.splitlines()), table


def test_every_lab_extension_accepts_the_lab_versions(engine, stack):
    """No "Unsatisfied version" in the browser console: every prebuilt extension's required
    @jupyterlab/* and @lumino/* versions (as its webpack bundle states them) are met by the
    versions JupyterLab itself ships."""
    script = (
        "import glob, json, os, re, jupyterlab\n"
        "lab = json.load(open(os.path.join(os.path.dirname(jupyterlab.__file__),\n"
        "                                   'static', 'package.json')))['resolutions']\n"
        "needs = {}\n"
        "for path in glob.glob('/usr/local/share/jupyter/labextensions/**/static/*.js',\n"
        "                      recursive=True):\n"
        "    text = open(path, encoding='utf-8', errors='replace').read()\n"
        "    name = path.split('/labextensions/')[1].split('/static/')[0]\n"
        "    found = needs.setdefault(name, [])\n"
        "    for pkg, rng in re.findall(r'shareKey:\"(@(?:jupyterlab|lumino)/[\\w-]+)\"'\n"
        "                               r'[^}]*?requiredVersion:\"([^\"]+)\"', text):\n"
        "        found.append((pkg, rng))\n"
        "    for pkg, parts in re.findall(r'\"(@(?:jupyterlab|lumino)/[\\w-]+)\",!?[01]?,?'\n"
        "                                 r'\\[([0-9,]+)\\]', text):\n"
        "        found.append((pkg, parts))\n"
        "print(json.dumps({'lab': lab, 'needs': needs}))\n")
    data = json.loads(in_container(engine, stack["id"], "python3", "-c", script)
                      .stdout.strip().splitlines()[-1])
    assert "@jupyter-widgets/jupyterlab-manager" in data["needs"], sorted(data["needs"])
    assert data["needs"]["@jupyter-widgets/jupyterlab-manager"], data["needs"]

    def version(text):
        return tuple(int(x) for x in re.findall(r"\d+", text.split("-")[0])[:3])

    unmet = []
    for extension, requirements in data["needs"].items():
        for package, wanted in requirements:
            if package not in data["lab"]:
                continue
            have = version(data["lab"][package])
            if "," in wanted:  # webpack's encoding: [fixed parts, major, minor, patch]
                fixed, *numbers = (int(x) for x in wanted.split(","))
                wanted_version, fixed = tuple(numbers[:3]), fixed
            elif wanted.startswith("^"):
                wanted_version = version(wanted)
                fixed = 1 if wanted_version[0] else 2
            elif wanted.startswith("~"):
                wanted_version, fixed = version(wanted), 2
            else:
                wanted_version, fixed = version(wanted), 3
            ok = have[:fixed] == wanted_version[:fixed] and have >= wanted_version
            if not ok:
                unmet.append((extension, package, wanted, data["lab"][package]))
    assert not unmet, unmet


def test_jupyter_news_are_off_and_unauthenticated_requests_log_no_traceback(engine, stack):
    status, _, body = http("/lab?token=" + stack["token"])
    assert status == 200
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">'
                                  r"(.*?)</script>", body, re.S).group(1))
    assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"]
    status, _, _ = http("/api/kernels")
    assert status == 403
    logs = engine("logs", stack["id"]).stdout
    assert "403 GET /api/kernels" in logs, logs[-3000:]
    assert "HTTPError: HTTP 403" not in logs, logs[-3000:]


def test_doctor_in_the_container_reports_each_check(stack, ssh_key, ids):
    result = ssh(ssh_key, "attnlab doctor", check=False)
    rows = {name: [status, detail] for name, status, detail in re.findall(
        r"^(TensorFlow|GPU|Mounts|Token|SSH keys) +(ok|warn|FAIL) +(.*)$", result.stdout, re.M)}
    assert rows["TensorFlow"] == ["ok", "2.9.0 (a CPU build: no CUDA)"], result.stdout
    assert rows["GPU"][0] == "warn" and "docker-compose.gpu.yml" in result.stdout, result.stdout
    assert rows["Mounts"] == ["ok", "notebooks, runs, data writable by uid %d" % ids[0]]
    assert rows["Token"][0] == rows["SSH keys"][0] == "ok", result.stdout
    assert result.returncode == 0, result.stdout


def test_attnlab_edits_on_the_host_are_live_in_the_container(stack, ssh_key, ids):
    probe = stack["root"] / "attnlab" / "_e2e_probe.py"
    probe.write_text("VALUE = 'edited on the host'\n")
    os.chown(str(probe), *ids)
    try:
        out = ssh(ssh_key, "cd /tmp && python -c 'from attnlab import _e2e_probe as p; "
                           "print(p.VALUE)'").stdout
        assert "edited on the host" in out
    finally:
        probe.unlink()


def test_every_shipped_notebook_executes_in_the_container(engine, stack, ids):
    notebooks = sorted((stack["root"] / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebook in notebooks/: there must be at least one to execute"
    out_dir = "/workspace/runs/e2e/executed"
    started = time.monotonic()
    result = in_container(engine, stack["id"], "python3", "/workspace/scripts/run-notebooks",
                          "--quick", "--output-dir", out_dir,
                          "--summary-json", out_dir + "/summary.json",
                          check=False, timeout=3000)
    METRICS["notebooks in the container (quick), s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stdout[-12000:]
    summary = json.loads((stack["root"] / "runs" / "e2e" / "executed" / "summary.json")
                         .read_text())
    assert [r["notebook"] for r in summary["results"]] == [n.name for n in notebooks], summary
    assert summary["quick"] and all(r["status"] == "ok" for r in summary["results"]), summary
    executed = stack["root"] / "runs" / "e2e" / "executed" / notebooks[0].name
    assert executed.stat().st_uid == ids[0]


def test_attnlab_unit_tests_pass_in_the_container_on_tf29(engine, image, project):
    """The unit suite (everything under tests/ but container/ and browser/) on TF 2.9, in a
    container of the image with the whole checkout at /workspace: some tests run the repo's
    scripts/, benchmarks/ and configs/, which compose does not mount."""
    # A copy owned by the container user: /workspace is its home and the tests' cwd.
    root = project["root"].parent / "unit-checkout"
    shutil.copytree(str(project["root"]), str(root), symlinks=True)
    run(["chown", "-R", "%d:%d" % project["ids"], str(root)])
    tests = root / "tests"
    unit = [p for p in tests.rglob("test_*.py")
            if p.relative_to(tests).parts[0] not in ("container", "browser")]
    assert unit, "no unit tests found under tests/"
    started = time.monotonic()
    result = engine("run", "--rm", "--network", "none", "--no-healthcheck", "--shm-size", "2g",
                    "-v", "%s:/workspace" % root, image["ref"], "bash", "-c",
                    "python3 -c 'import sys, tensorflow as tf; "
                    "print(\"python\", sys.version.split()[0], \"tensorflow\", tf.__version__)'"
                    " && python3 -m pytest tests -q -p no:cacheprovider --ignore=tests/container"
                    # The manifest check needs the Kubernetes client, a host test dependency.
                    " --ignore=tests/browser --ignore=tests/train/test_kubernetes.py"
                    " -n 2 --durations=10",
                    check=False, timeout=3000)
    METRICS["unit tests in the container (%d files), s" % len(unit)] = \
        round(time.monotonic() - started, 1)
    versions = re.search(r"^python (3\.\d+)\S* tensorflow (\S+)$", result.stdout, re.M)
    assert versions and versions.group(2) == "2.9.0", result.stdout[:3000]
    METRICS["unit tests in the container, versions"] = versions.group(0)
    summary = [line for line in result.stdout.splitlines() if " in " in line and "passed" in line]
    METRICS["unit tests in the container, result"] = summary[-1] if summary else "no summary"
    assert result.returncode == 0, result.stdout[-20000:]


def test_training_started_over_ssh_with_detach_outlives_the_ssh_session(stack, ssh_key):
    """`attnlab train --detach` over SSH returns at once; the run keeps going after the SSH
    session has ended and finishes on its own. A tmux session outlives SSH too."""
    runs = stack["root"] / "runs" / "e2e" / "train"
    started = ssh(ssh_key, "attnlab train /workspace/configs/tiny_reverse.yaml --name detached "
                  "--runs-dir /workspace/runs/e2e/train --detach")
    assert "detached" in started.stdout, started.stdout
    ssh(ssh_key, "tmux new-session -d -s e2e-train 'python3 -c \"import time; time.sleep(3600)\"'")
    status_path = runs / "detached" / "status.json"
    deadline = time.monotonic() + 900
    status = {}
    while time.monotonic() < deadline:
        if status_path.exists():
            status = json.loads(status_path.read_text())
            if status.get("state") in ("finished", "failed"):
                break
        time.sleep(2)
    METRICS["detached tiny training run, s"] = round(time.monotonic() - (deadline - 900), 1)
    assert status.get("state") == "finished", status
    assert (runs / "detached" / "metrics.json").exists()
    check = ssh(ssh_key, "tmux has-session -t e2e-train && echo alive")
    assert check.stdout.strip().endswith("alive")


TERM_WATCHER = ("import signal, sys, time\n"
                "def stop(*_):\n"
                "    open('/workspace/runs/e2e/term.txt', 'w').write('checkpoint written')\n"
                "    sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, stop)\n"
                "open('/workspace/runs/e2e/term-ready.txt', 'w').write('ready')\n"
                "while True: time.sleep(0.2)\n")


def test_stop_sends_sigterm_to_detached_processes_and_restart_works(engine, stack, ssh_key):
    """`compose stop`: a detached process gets SIGTERM (time to checkpoint); then `compose
    start` of the same container: healthy again, same host key (idempotent entrypoint)."""
    root = stack["root"]
    ssh(ssh_key, "setsid nohup python3 -c %s > /dev/null 2>&1 < /dev/null &"
        % shlex.quote(TERM_WATCHER))
    deadline = time.monotonic() + 30
    while not (root / "runs" / "e2e" / "term-ready.txt").exists():
        assert time.monotonic() < deadline, "the watcher did not start"
        time.sleep(0.5)
    key_before = host_key_line()

    started = time.monotonic()
    engine.compose(root, "stop", timeout=300)
    METRICS["compose stop, s"] = round(time.monotonic() - started, 1)
    assert (root / "runs" / "e2e" / "term.txt").read_text() == "checkpoint written"

    engine.compose(root, "start", timeout=600)
    assert container_of(engine) == stack["id"]
    wait_healthy(engine, stack["id"])
    assert host_key_line() == key_before
    status, _, _ = http("/api/contents", token=stack["token"])
    assert status == 200


def test_a_checkout_owned_by_another_uid_is_writable(engine, image, project, base_image,
                                                     ssh_key, workdir):
    """The second ownership case, focused: a checkout owned by a UID that is neither root
    nor 1000, make-env run as root on it, then `compose up` of its own image (only the user
    layers are rebuilt): the container user is that UID and saves notebooks, writes runs/
    and data/. The whole suite runs once, on the root-owned checkout above."""
    other = int(os.environ.get("ATTNLAB_OTHER_UID", "4321"))
    root = workdir / ("attnlab-uid-%d" % other)
    copy_checkout(root)
    run(["chown", "-R", "%d:%d" % (other, other), str(root)])
    name, ref = PROJECT_NAME + "-uid", IMAGE_REF + "-uid"
    token, uid, gid = make_env(root, ssh_key, ref, base_image, JUPYTER_PORT + 1, SSH_PORT + 1)
    assert (uid, gid) == (other, other)

    def compose(*args, **kwargs):
        return run(list(engine.compose_cmd) + ["-p", name] +
                   (engine.build_args if args[0] == "build" else []) + list(args),
                   cwd=str(root), **kwargs)

    compose("down", "-v", check=False, timeout=300)
    try:
        started = time.monotonic()
        compose("build", timeout=3600)
        compose("up", "-d", timeout=600)
        ids = engine("ps", "-q", "--filter", "label=com.docker.compose.project=" + name)
        container = ids.stdout.split()[0]
        wait_healthy(engine, container)
        METRICS["second checkout (UID %d): build + up -> healthy, s" % other] = round(
            time.monotonic() - started, 1)
        save_notebook_with_checkpoint(token, port=JUPYTER_PORT + 1)
        out = in_container(engine, container, "bash", "-c",
                           "id -u && touch /workspace/runs/probe /workspace/data/probe").stdout
        assert out.split()[-1] == str(other), out
        for path in ("notebooks/e2e-saved.ipynb", "runs/probe", "data/probe"):
            assert (root / path).stat().st_uid == other, path
        assert "is not writable" not in engine("logs", container).stdout
    finally:
        compose("down", "-v", check=False, timeout=300)
        engine("rmi", "-f", ref, check=False)
