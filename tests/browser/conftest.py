"""Browser tests need Chromium, JupyterLab and Playwright: collected only when asked for.

`scripts/test-browser` installs those and sets ATTNLAB_BROWSER_TESTS=1; a plain
`pytest tests` skips collecting this folder.
"""
import os

collect_ignore_glob = [] if os.environ.get("ATTNLAB_BROWSER_TESTS") == "1" else ["test_*.py"]
