"""A private JupyterLab for the browser tests, and how a test opens a notebook in it.

`running_lab` starts `jupyter lab` on 127.0.0.1 with a random port and token in a private
temporary root (own config, data, runtime and settings folders, own kernelspec for this
Python) and stops it, its kernels included, afterwards; tests/browser/conftest.py runs one
for the whole browser stage. `open_and_run` opens a notebook in a Playwright page and runs
all its cells from the Run menu.
"""
import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}
DEVICE_PIXEL_RATIO = 2
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNEL = "attnlab-browser-test"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, path, method="GET", token=None):
    """(status, Location header, body) without following redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": "token " + token} if token else {}
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return response.status, response.getheader("Location"), body
    finally:
        conn.close()


def write_notebook(path, cells):
    """A notebook of code `cells` (strings) that runs on this test's kernel."""
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
              "source": source} for source in cells]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": KERNEL, "display_name": KERNEL,
                                            "language": "python"}}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(notebook, f)


def private_jupyter_env(tmp):
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
        env[var] = os.path.join(tmp, sub)
        os.makedirs(env[var], exist_ok=True)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # A kernelspec for exactly this interpreter, so the test never picks another Python.
    spec = os.path.join(env["JUPYTER_DATA_DIR"], "kernels", KERNEL)
    os.makedirs(spec)
    with open(os.path.join(spec, "kernel.json"), "w") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                            "{connection_file}"],
                   "display_name": KERNEL, "language": "python"}, f)
    # No news or update checks: the test runs offline and a toast could cover the page.
    notify = os.path.join(env["JUPYTERLAB_SETTINGS_DIR"], "@jupyterlab", "apputils-extension")
    os.makedirs(notify)
    with open(os.path.join(notify, "notification.jupyterlab-settings"), "w") as f:
        json.dump({"fetchNews": "false", "checkForUpdates": False}, f)
    return env


def processes_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@contextlib.contextmanager
def running_lab(tmp_path):
    """A running JupyterLab: yields (port, token, root); stops it and its kernels after."""
    root = tmp_path / "root"
    root.mkdir()
    env = private_jupyter_env(str(tmp_path / "jupyter"))
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp_path / "jupyter.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
         "--port=%d" % port, "--port-retries=0", "--IdentityProvider.token=" + token,
         "--ServerApp.root_dir=" + str(root), "--allow-root",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=str(root), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "jupyter.log").read_text()
            try:
                if request(port, "/api/status", token=token)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "jupyter lab did not start in 90 s"
            time.sleep(0.5)
        yield port, token, root
    finally:
        try:  # shut kernels down through the API, then the server itself
            status, _, body = request(port, "/api/kernels", token=token)
            for kernel in json.loads(body) if status == 200 else []:
                request(port, "/api/kernels/" + kernel["id"], "DELETE", token)
        except (OSError, ValueError):
            pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
        log.close()
        leftovers = processes_mentioning(str(tmp_path))
        for pid in leftovers:  # kernels this server started, if any survived
            os.kill(pid, signal.SIGKILL)
        assert not leftovers, "processes left behind: %s" % leftovers


def open_and_run(page, port, token, notebook):
    """Open `notebook` (a file in the lab's root) and run all its cells from the Run menu."""
    page.set_default_timeout(60_000)
    page.goto("http://127.0.0.1:%d/lab/tree/%s?reset&token=%s" % (port, notebook, token))
    # The kernel is connected once the status bar names it as idle.
    page.get_by_text(KERNEL + " | Idle").wait_for()
    page.locator(".jp-Cell .jp-InputPrompt").first.click()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-InputPrompt')]"
        ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))")
