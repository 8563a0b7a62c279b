# JupyterLab settings of the attnlab container (/etc/jupyter/jupyter_server_config.py).
import logging
import os

c = get_config()  # noqa: F821

c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = 8888
c.ServerApp.open_browser = False
c.ServerApp.root_dir = "/workspace"
c.ServerApp.terminado_settings = {"shell_command": ["/bin/bash", "-l"]}

# The token: the entrypoint writes it to a file only this user can read and keeps it out
# of the environment, which every kernel and terminal inherits. Without the file (jupyter
# started by hand) the server makes a random token, as it always does: never none.
TOKEN_FILE = "/var/lib/attnlab/run/jupyter-token"
if os.path.exists(TOKEN_FILE):
    with open(TOKEN_FILE, encoding="utf-8") as token_file:
        c.IdentityProvider.token = token_file.read()

# The login cookie is not sent along with requests that other sites start (CSRF).
c.IdentityProvider.cookie_options = {"samesite": "Lax"}

# No news or update checks: the workbench often runs offline, and the pop-up asking for
# them is noise (the announcements plugin is disabled in the Dockerfile).
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"


class NoTracebackForHTTPErrors(logging.Filter):
    """Keeps the one-line warning of an answered HTTP error (such as the 403 of every request
    without the token) but drops its traceback: jupyter_server 2.14 logs one for each."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if type(error).__name__ == "HTTPError" and type(error).__module__ == "tornado.web":
            record.exc_info = None
            record.exc_text = None
        return True


c.ServerApp.logging_config = {
    "filters": {"no_http_error_tracebacks": {"()": NoTracebackForHTTPErrors}},
    "handlers": {"console": {"filters": ["no_http_error_tracebacks"]}},
}


def harden_tensorboard_response(response):
    """TensorBoard's pages may be framed by JupyterLab only (its CSP has no
    frame-ancestors), and its inline CSS asks for fonts at the server root (/font-roboto/),
    which is not TensorBoard's behind the proxy: make those URLs relative."""
    policy = response.headers.get("Content-Security-Policy")
    if policy and "frame-ancestors" not in policy:
        response.headers["Content-Security-Policy"] = policy + ";frame-ancestors 'self'"
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    if response.headers.get("Content-Type", "").startswith(("text/html", "text/css")):
        response.body = response.body.replace(b"url(/font-roboto/", b"url(font-roboto/")


# TensorBoard on the runs folder, behind Jupyter's token: <jupyter url>/tensorboard/
# (also a tile in the JupyterLab launcher). It starts on first use and listens on
# 127.0.0.1 inside the container only, so no extra port is published.
c.ServerProxy.servers = {
    "tensorboard": {
        "command": [
            "tensorboard", "--logdir", "/workspace/runs", "--host", "127.0.0.1",
            "--port", "{port}", "--path_prefix", "{base_url}tensorboard",
        ],
        "absolute_url": True,
        "timeout": 120,
        "launcher_entry": {"title": "TensorBoard"},
        "rewrite_response": harden_tensorboard_response,
    },
}
