"""AttentionExplorer in a real JupyterLab, driven by Playwright with Debian's Chromium.

In the JupyterLab that tests/browser/conftest.py starts once for the browser stage (a
private temporary root, random port and token; see tests/browser/lab.py): checks that the
server refuses requests without the token, opens a notebook that shows an explorer, runs
all cells from the Run menu, changes the head dropdown in the page and checks that the
rendered heatmap changed (screenshots before and after) and that the Python-side state
followed (an observer writes it into a label). The page is a 1280 x 800
laptop window at device-pixel ratio 2: the heatmap must be drawn at its displayed size (no
CSS stretching) and the map and its controls must be seen together. The lab and its
kernels are stopped at the end of the stage.
"""
import io

import numpy as np
from PIL import Image

from tests.browser.lab import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    DEVICE_PIXEL_RATIO,
    KERNEL,
    VIEWPORT,
    write_notebook,
)
from tests.browser.lab import request as _request

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
    write_notebook(str(root / "explorer.ipynb"), NOTEBOOK_CELLS)
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
