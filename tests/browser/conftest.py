"""Browser tests need Chromium, JupyterLab and Playwright: collected only when asked for.

`scripts/test-browser` installs those and sets ATTNLAB_BROWSER_TESTS=1; a plain
`pytest tests` skips collecting this folder. One JupyterLab serves every browser test of
the run (`jupyter_lab`); each test opens its own notebook in it.
"""
import os

import pytest

from tests.browser.lab import running_lab

collect_ignore_glob = [] if os.environ.get("ATTNLAB_BROWSER_TESTS") == "1" else ["test_*.py"]


@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory):
    """(port, token, root) of a JupyterLab started once for the browser stage."""
    with running_lab(tmp_path_factory.mktemp("lab")) as lab:
        yield lab
