"""AttentionExplorer in a real JupyterLab, driven by Playwright with Debian's Chromium.

Starts `jupyter lab` on 127.0.0.1 with a random port and token in a private temporary
root (own config, data, runtime and settings folders, own kernelspec for this Python),
checks that the server refuses requests without the token, opens a notebook that shows an
explorer, runs all cells from the Run menu, changes the head dropdown in the page and
checks that the rendered heatmap changed (screenshots before and after) and that the
Python-side state followed (an observer writes it into a label). The page is a 1280 x 800
laptop window at device-pixel ratio 2: the heatmap must be drawn at its displayed size (no
CSS stretching) and the map and its controls must be seen together. Everything it started
is stopped at the end, kernels included.
"""
import http.client
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}
DEVICE_PIXEL_RATIO = 2
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNEL = "attnlab-browser-test"

NOTEBOOK_CELLS = [
    """import json
import ipywidgets as widgets
import numpy as np
from attnlab.viz.explorer import AttentionExplorer

rng = np.random.default_rng(0)
scores = rng.normal(size=(2, 4, 16, 16)) * 3.0
weights = {"enc0": np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)}
tokens = ["tok%d" % i for i in range(16)]
explorer = AttentionExplorer(weights, tokens, tokens, backend="image", pixel_ratio=2)""",
    """echo = widgets.Label(value="STATE " + json.dumps(explorer.state))
echo.add_class("attnlab-state-echo")
explorer.observe(lambda state: setattr(echo, "value", "STATE " + json.dumps(state)))
display(explorer, echo)""",
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port, path, method="GET", token=None):
    """(status, Location header) without following redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": "token " + token} if token else {}
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return response.status, response.getheader("Location"), body
    finally:
        conn.close()


def _write_notebook(path):
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
              "source": source} for source in NOTEBOOK_CELLS]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": KERNEL, "display_name": KERNEL,
                                            "language": "python"}}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(notebook, f)


def _private_jupyter_env(tmp):
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


@pytest.fixture
def jupyter_lab(tmp_path):
    """A running JupyterLab: yields (port, token, root); stops it and its kernels after."""
    root = tmp_path / "root"
    root.mkdir()
    env = _private_jupyter_env(str(tmp_path / "jupyter"))
    port, token = _free_port(), secrets.token_hex(16)
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
                if _request(port, "/api/status", token=token)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "jupyter lab did not start in 90 s"
            time.sleep(0.5)
        yield port, token, root
    finally:
        try:  # shut kernels down through the API, then the server itself
            status, _, body = _request(port, "/api/kernels", token=token)
            for kernel in json.loads(body) if status == 200 else []:
                _request(port, "/api/kernels/" + kernel["id"], "DELETE", token)
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
        leftovers = _processes_mentioning(str(tmp_path))
        for pid in leftovers:  # kernels this server started, if any survived
            os.kill(pid, signal.SIGKILL)
        assert not leftovers, "processes left behind: %s" % leftovers


def _processes_mentioning(text):
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


def test_token_is_required(jupyter_lab):
    port, token, _ = jupyter_lab
    assert _request(port, "/api/contents")[0] == 403
    status, location, _ = _request(port, "/lab")
    assert status == 302 and "/login" in location
    assert _request(port, "/api/contents", token="wrong" + token)[0] == 403
    assert _request(port, "/api/contents", token=token)[0] == 200


def _screenshot(locator):
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


# The explorer is scrolled to the top of the notebook, then measured in CSS pixels: the
# image's natural size against its displayed size, and whether each part is the topmost
# element at its own corners (inside the window and not covered by JupyterLab's bars).
GEOMETRY_JS = """() => {
  const explorer = document.querySelector('.attnlab-explorer');
  explorer.scrollIntoView({block: 'start'});
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    const inset = 3;
    const points = [[r.left + inset, r.top + inset], [r.right - inset, r.top + inset],
                    [r.left + inset, r.bottom - inset], [r.right - inset, r.bottom - inset]];
    return r.width > 0 && points.every(([x, y]) => {
      const hit = document.elementFromPoint(x, y);
      return hit !== null && (hit === el || el.contains(hit));
    });
  };
  const image = document.querySelector('img.attnlab-heatmap');
  const box = image.getBoundingClientRect();
  const controls = {};
  for (const name of ['example', 'layer', 'head', 'tokens', 'query-window', 'key-window',
                      'export']) {
    controls[name] = visible(document.querySelector('.attnlab-' + name));
  }
  return {devicePixelRatio: window.devicePixelRatio,
          natural: [image.naturalWidth, image.naturalHeight],
          displayed: [box.width, box.height],
          explorer: explorer.getBoundingClientRect().toJSON(),
          window: [window.innerWidth, window.innerHeight],
          mapVisible: visible(image), controlsVisible: controls};
}"""


def _layout_problems(geometry):
    """What is wrong with the measured explorer layout (an empty list when nothing is)."""
    problems = []
    ratio = geometry["devicePixelRatio"]
    for axis, natural, shown in zip("xy", geometry["natural"], geometry["displayed"]):
        if abs(natural / shown - ratio) > 0.01:
            problems.append("image %s: %d pixels drawn at %.1f CSS pixels, ratio %.2f, not "
                            "the device-pixel ratio %g" % (axis, natural, shown,
                                                           natural / shown, ratio))
    if not geometry["mapVisible"]:
        problems.append("the map is not wholly in view")
    hidden = sorted(name for name, seen in geometry["controlsVisible"].items() if not seen)
    if hidden:
        problems.append("controls not in view together with the map: %s" % hidden)
    return problems


def test_explorer_reacts_to_the_page(jupyter_lab):
    from playwright.sync_api import sync_playwright

    port, token, root = jupyter_lab
    _write_notebook(str(root / "explorer.ipynb"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=DEVICE_PIXEL_RATIO)
            try:
                page.set_default_timeout(60_000)
                page.goto("http://127.0.0.1:%d/lab/tree/explorer.ipynb?reset&token=%s"
                          % (port, token))
                # The kernel is connected once the status bar names it as idle.
                page.get_by_text(KERNEL + " | Idle").wait_for()
                page.locator(".jp-Cell .jp-InputPrompt").first.click()
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.jp-InputPrompt')]"
                    ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))")

                image = page.locator("img.attnlab-heatmap")
                image.wait_for(state="visible")
                page.wait_for_function(
                    "() => { const i = document.querySelector('img.attnlab-heatmap');"
                    " return i && i.complete && i.naturalWidth > 100; }")
                echo = page.locator(".attnlab-state-echo")
                echo.wait_for(state="visible")
                assert '"head": 0' in echo.inner_text()
                geometry = page.evaluate(GEOMETRY_JS)
                print("explorer geometry at %(width)dx%(height)d:" % VIEWPORT, geometry)
                shot = str(root.parent / "explorer-in-view.png")
                page.screenshot(path=shot)
                print("the explorer in view: " + shot)
                image.scroll_into_view_if_needed()
                before_src = image.get_attribute("src")
                before = _screenshot(image)

                page.locator(".attnlab-head select").select_option(label="head 3")
                page.wait_for_function(
                    "(old) => { const i = document.querySelector('img.attnlab-heatmap');"
                    " return i.src !== old && i.complete && i.naturalWidth > 100; }",
                    arg=before_src)
                page.wait_for_function(
                    "() => document.querySelector('.attnlab-state-echo')"
                    ".innerText.includes('\"head\": 3')")
                after = _screenshot(image)
            except Exception:
                shot = str(root.parent / "failure.png")
                page.screenshot(path=shot)
                print("page at the failure: " + shot)
                raise
        finally:
            browser.close()
    assert before.shape == after.shape
    # The heatmap covers about half of the image element (the rest is axes and labels);
    # another head of random attention recolours most cells.
    changed = np.mean(np.abs(before - after).max(axis=-1) > 24)
    assert changed > 0.1, "only %.1f%% of the image pixels changed" % (100 * changed)
    assert geometry["devicePixelRatio"] == DEVICE_PIXEL_RATIO
    assert not _layout_problems(geometry), (_layout_problems(geometry), geometry)
