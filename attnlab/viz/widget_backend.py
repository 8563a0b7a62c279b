"""Where a widget's figure is drawn: an ipympl canvas, or Agg-drawn PNGs in an image."""
import importlib.util

from attnlab.validation import check_choice

BACKENDS = ("auto", "ipympl", "image")


def choose_backend(backend):
    """"ipympl" or "image" for a widget's `backend` argument.

    "auto" is "ipympl" when ipympl is installed and is matplotlib's active backend
    (`%matplotlib widget`), else "image".

    Raises:
        ValueError: `backend` is not one of BACKENDS.
    """
    check_choice("backend", backend, BACKENDS)
    if backend != "auto":
        return backend
    import matplotlib

    # Importing ipympl switches matplotlib's backend, so only look for it here.
    if importlib.util.find_spec("ipympl") is None:
        return "image"
    name = matplotlib.get_backend().lower()
    return "ipympl" if ("ipympl" in name or "widget" in name) else "image"
