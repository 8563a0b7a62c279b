# syntax=docker/dockerfile:1
# attnlab workbench: TensorFlow 2.9 + JupyterLab + SSH, run as a non-root user.
# Build: `docker compose build` (or `docker compose up`). Podman: add `--format docker` to
# keep the HEALTHCHECK. Behind a TLS-intercepting proxy: docs/container.md.
ARG BASE_IMAGE=tensorflow/tensorflow:2.9.0-gpu-jupyter
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# The base image's NVIDIA apt sources are signed with a key NVIDIA rotated in 2022, so a
# plain `apt-get update` fails (NO_PUBKEY A4B469963BF863CC). CUDA is already installed and
# nothing here comes from those sources: drop them. openssh-server's package makes host
# keys; they are deleted so that none is ever baked into the image.
RUN for list in /etc/apt/sources.list.d/*; do \
      if grep -qs 'developer.download.nvidia.com' "$list"; then rm -f "$list"; fi; \
    done \
 && apt-get update \
 && apt-get install -y --no-install-recommends openssh-server tini tmux \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \
 && test -x /usr/bin/tini

# Python packages: pip first (the base has pip < 20.3), then the pinned set.
# pip-with-ca trusts the optional `extra_ca` build secret (a proxy CA) for these steps only.
COPY docker/requirements.txt docker/pip-with-ca /tmp/attnlab-build/
RUN --mount=type=secret,id=extra_ca \
    /tmp/attnlab-build/pip-with-ca install --upgrade "$(grep -E '^pip==' /tmp/attnlab-build/requirements.txt)" \
 && /tmp/attnlab-build/pip-with-ca install -r /tmp/attnlab-build/requirements.txt \
 && python3 -m pip check
# No "get notified about Jupyter news?" pop-up: the announcements plugin is off (the
# server side, news_url, is off in jupyter_server_config.py).
RUN jupyter labextension disable --level=sys_prefix "@jupyterlab/apputils-extension:announcements"

# The non-root user. Give it your UID/GID (build args; .env: ATTNLAB_UID, ATTNLAB_GID)
# so that what it writes into bind mounts belongs to you. No sudo.
# Its home is /workspace, so that SSH sessions (sshd starts them in the home folder) are
# where the configs, notebooks and mounted runs are. Jupyter hides the dotfiles there.
ARG USER_UID=1000
ARG USER_GID=1000
RUN [[ $USER_UID != 0 && $USER_GID != 0 ]] || { echo "USER_UID/USER_GID must not be 0" >&2; exit 1; }; \
    getent group "$USER_GID" > /dev/null || groupadd --gid "$USER_GID" researcher; \
    useradd --no-log-init --uid "$USER_UID" --gid "$USER_GID" --home-dir /workspace --create-home \
      --shell /bin/bash researcher \
 && mkdir -p /workspace/runs /workspace/data /workspace/models /var/lib/attnlab/ssh-host-keys /var/lib/attnlab/run \
 && chmod 755 /workspace \
 && chmod 700 /var/lib/attnlab/ssh-host-keys /var/lib/attnlab/run \
 && chown -R "$USER_UID:$USER_GID" /workspace /var/lib/attnlab

COPY --chmod=755 docker/entrypoint /usr/local/bin/attnlab-entrypoint
COPY --chmod=755 docker/healthcheck /usr/local/bin/attnlab-healthcheck
COPY docker/sshd_config /etc/ssh/attnlab_sshd_config
COPY docker/profile.sh /etc/profile.d/attnlab-env.sh
COPY docker/jupyter_server_config.py /etc/jupyter/jupyter_server_config.py

# attnlab, installed editable from /workspace. Compose bind-mounts the repo's attnlab/,
# notebooks/, configs/, scripts/ and tests/ over these copies (and PYTHONPATH names /workspace as well), so an
# edit on the host is picked up by a kernel restart, without a rebuild.
COPY --chown=${USER_UID}:${USER_GID} pyproject.toml README.md /workspace/
COPY --chown=${USER_UID}:${USER_GID} attnlab /workspace/attnlab
RUN --mount=type=secret,id=extra_ca \
    /tmp/attnlab-build/pip-with-ca install --no-deps --no-build-isolation -e /workspace \
 && rm -rf /tmp/attnlab-build \
 && chown -R "$USER_UID:$USER_GID" /workspace
COPY --chown=${USER_UID}:${USER_GID} notebooks /workspace/notebooks
COPY --chown=${USER_UID}:${USER_GID} configs /workspace/configs
COPY --chown=${USER_UID}:${USER_GID} scripts /workspace/scripts
COPY --chown=${USER_UID}:${USER_GID} tests /workspace/tests

ENV PYTHONPATH=/workspace
# Runs go to the mounted runs folder wherever `attnlab train` is started (SSH, terminal,
# notebook). TensorFlow keeps its warnings but not its INFO lines (oneDNN, CPU features),
# which notebooks would show as stderr boxes.
ENV ATTNLAB_RUNS_DIR=/workspace/runs \
    TF_CPP_MIN_LOG_LEVEL=1
# Pretrained weights come only from the mounted models folder (docs/pretrained.md): the
# Hugging Face libraries never reach for the network, a missing model fails at once.
ENV ATTNLAB_MODELS_DIR=/workspace/models \
    HF_HOME=/workspace/models/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
USER ${USER_UID}:${USER_GID}
WORKDIR /workspace
EXPOSE 8888 2222

HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["attnlab-healthcheck"]

# tini is PID 1 (compose sets `init: false` so that no second init is added); -g passes
# signals to the whole process group.
ENTRYPOINT ["tini", "-g", "--", "attnlab-entrypoint"]
CMD ["jupyter", "lab"]
