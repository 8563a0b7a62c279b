# JupyterLab settings of the attnlab container (/etc/jupyter/jupyter_server_config.py).
# The token comes from the entrypoint (JUPYTER_TOKEN in the environment); it is required.
c = get_config()  # noqa: F821

c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = 8888
c.ServerApp.open_browser = False
c.ServerApp.root_dir = "/workspace"
c.ServerApp.terminado_settings = {"shell_command": ["/bin/bash", "-l"]}

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
    },
}
