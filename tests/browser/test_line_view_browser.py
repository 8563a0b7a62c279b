"""TokenLineView in a real JupyterLab: a click on a token in the page isolates its lines.

Uses the JupyterLab of tests/browser/conftest.py (one per browser stage). The notebook
shows a line view drawn as an image, with transparent buttons over its token labels, and
a label into which an observer writes the Python-side state. The test clicks the label of
query token 3 and checks that the image changed (screenshots before and after), that the
state followed, and that the clicked button lies on its label inside the image.
"""
import io

import numpy as np
from PIL import Image

from tests.browser.lab import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    DEVICE_PIXEL_RATIO,
    VIEWPORT,
    open_and_run,
    write_notebook,
)

NOTEBOOK_CELLS = [
    """import json
import ipywidgets as widgets
import numpy as np
from attnlab.viz.line_view import TokenLineView

rng = np.random.default_rng(0)
scores = rng.normal(size=(1, 4, 16, 16)) * 2.0
weights = {"enc0": np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)}
tokens = ["tok%d" % i for i in range(16)]
view = TokenLineView(weights, tokens, tokens, backend="image", pixel_ratio=2)""",
    """echo = widgets.Label(value="STATE " + json.dumps(view.state))
echo.add_class("attnlab-state-echo")
view.observe(lambda state: setattr(echo, "value", "STATE " + json.dumps(state)))
display(view, echo)""",
]

IMAGE = "img.attnlab-line-image"
QUERY_3 = ".attnlab-query-token[title='query 3: tok3']"

# Where the query 3 button is against the image, in CSS pixels, and whether it is the
# topmost element at its centre (the image must not cover it).
GEOMETRY_JS = """(selector) => {
  const button = document.querySelector(selector);
  const image = document.querySelector('img.attnlab-line-image');
  button.scrollIntoView({block: 'center'});
  const b = button.getBoundingClientRect(), i = image.getBoundingClientRect();
  const hit = document.elementFromPoint((b.left + b.right) / 2, (b.top + b.bottom) / 2);
  return {button: [b.left - i.left, b.top - i.top, b.width, b.height],
          image: [i.width, i.height], natural: [image.naturalWidth, image.naturalHeight],
          onTop: hit === button || button.contains(hit)};
}"""


def _screenshot(locator):
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def test_clicking_a_token_isolates_its_lines(jupyter_lab):
    from playwright.sync_api import sync_playwright

    port, token, root = jupyter_lab
    write_notebook(str(root / "line_view.ipynb"), NOTEBOOK_CELLS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=DEVICE_PIXEL_RATIO)
            try:
                open_and_run(page, port, token, "line_view.ipynb")
                image = page.locator(IMAGE)
                image.wait_for(state="visible")
                page.wait_for_function(
                    "() => { const i = document.querySelector('%s');"
                    " return i && i.complete && i.naturalWidth > 100; }" % IMAGE)
                echo = page.locator(".attnlab-state-echo")
                echo.wait_for(state="visible")
                assert '"selected_query": null' in echo.inner_text()
                button = page.locator(QUERY_3)
                button.wait_for(state="attached")
                geometry = page.evaluate(GEOMETRY_JS, QUERY_3)
                print("query 3 button against the image:", geometry)
                before_src = image.get_attribute("src")
                before = _screenshot(image)

                button.click()
                page.wait_for_function(
                    "(old) => { const i = document.querySelector('%s');"
                    " return i.src !== old && i.complete && i.naturalWidth > 100; }" % IMAGE,
                    arg=before_src)
                page.wait_for_function(
                    "() => document.querySelector('.attnlab-state-echo')"
                    ".innerText.includes('\"selected_query\": 3')")
                after = _screenshot(image)
                shot = str(root.parent / "line-view-after-click.png")
                page.screenshot(path=shot)
                print("the line view after the click: " + shot)
            except Exception:
                shot = str(root.parent / "line-view-failure.png")
                page.screenshot(path=shot)
                print("page at the failure: " + shot)
                raise
        finally:
            browser.close()
    assert before.shape == after.shape
    # 16 queries' lines become one query's: much of the area between the columns clears.
    changed = np.mean(np.abs(before - after).max(axis=-1) > 24)
    assert changed > 0.02, "only %.1f%% of the image pixels changed" % (100 * changed)
    left, top, width, height = geometry["button"]
    shown_width, shown_height = geometry["image"]
    assert geometry["onTop"], geometry
    # The query buttons lie over the left labels, inside the image and left of its middle.
    assert 0 <= left and left + width <= shown_width / 2, geometry
    assert 0 <= top and top + height <= shown_height, geometry
    assert geometry["natural"][0] == DEVICE_PIXEL_RATIO * shown_width, geometry
