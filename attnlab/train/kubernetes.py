"""Kubernetes manifests for a multi-worker run: a ConfigMap, a headless Service, an Indexed Job.

No operator is needed. The Job runs one pod per worker (completionMode: Indexed); pod I is
reachable as NAME-I.NAME (the headless Service gives the pods DNS names through the pods'
`subdomain`), and gets its index from the completion-index annotation through
$ATTNLAB_WORKER_INDEX, so every pod runs the same `attnlab launch` command.
"""
import os
import re

import yaml

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
CONFIG_MOUNT = "/etc/attnlab"
RUNS_MOUNT = "/workspace/runs"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def _check(name, workers, image, port):
    if not DNS_LABEL.match(name) or len(name) > 50:
        raise ValueError("--name: %r must be a DNS label of at most 50 characters (lower-case "
                         "letters, digits and '-', starting with a letter): pods are named "
                         "NAME-INDEX" % name)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError("--workers: expected a positive number of workers, got %r" % (workers,))
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        raise ValueError("--image: expected an image reference such as "
                         "registry.example/attnlab-workbench:1.0, got %r" % (image,))
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        raise ValueError("--port: expected 1024-65535 (the pods run as a non-root user), got %r"
                         % (port,))


def manifests(config_text, workers, image, name, port=23456, runs_claim=None, namespace=None):
    """The objects (as dicts) of a `workers`-worker run of the config `config_text`.

    Args:
        config_text: the YAML config, stored in a ConfigMap and mounted into every pod.
        workers: number of workers (pods); worker 0 is the chief.
        image: the attnlab image (it must be pullable by the cluster).
        name: run name; also the name of the Job, the Service and the ConfigMap.
        port: the TCP port of every worker's gRPC server.
        runs_claim: a PersistentVolumeClaim mounted at /workspace/runs. ReadWriteMany lets
            every pod read the chief's checkpoints, which resuming needs; without a claim
            the runs folder is an emptyDir that ends with the pod.
        namespace: namespace of the objects (default: the kubectl context's).

    Returns:
        [ConfigMap, Service, Job] as dicts, ready for yaml.safe_dump_all.

    Example:
        >>> objects = manifests(open("configs/tiny_reverse.yaml").read(), 2,
        ...                     "registry.example/attnlab-workbench:1.0", "tiny")
    """
    _check(name, workers, image, port)
    metadata = {"name": name, "labels": {"app.kubernetes.io/name": "attnlab",
                                         "attnlab/run": name}}
    if namespace:
        metadata["namespace"] = namespace
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                  "data": {"config.yaml": config_text}}
    container = _worker_container(name, workers, image, port)
    return [config_map, _headless_service(metadata, name, port),
            _indexed_job(metadata, name, workers, container, runs_claim)]


def _headless_service(metadata, name, port):
    """The Service that gives worker I the DNS name NAME-I.NAME."""
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": metadata,
        "spec": {
            "clusterIP": "None",  # headless: one DNS record per pod, no load balancing
            # Workers must find each other before any of them is "ready".
            "publishNotReadyAddresses": True,
            "selector": {"attnlab/run": name},
            "ports": [{"name": "grpc", "port": port, "targetPort": port}],
        },
    }


def _worker_container(name, workers, image, port):
    """The container every worker pod runs: `attnlab launch` with its index from the Job."""
    hosts = ",".join("%s-%d.%s:%d" % (name, i, name, port) for i in range(workers))
    return {
        "name": "worker",
        "image": image,
        # The image's entrypoint (tini, then attnlab-entrypoint) runs these arguments.
        "args": ["attnlab", "launch", CONFIG_MOUNT + "/config.yaml", "--workers", hosts,
                 "--name", name, "--runs-dir", RUNS_MOUNT],
        "env": [{"name": "ATTNLAB_WORKER_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['%s']" % INDEX_ANNOTATION}}}],
        "ports": [{"name": "grpc", "containerPort": port, "protocol": "TCP"}],
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
                         {"name": "runs", "mountPath": RUNS_MOUNT}],
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }


def _indexed_job(metadata, name, workers, container, runs_claim):
    """The Indexed Job of `workers` pods, its runs folder on `runs_claim` or an emptyDir."""
    runs_volume = {"name": "runs"}
    if runs_claim:
        runs_volume["persistentVolumeClaim"] = {"claimName": runs_claim}
    else:
        runs_volume["emptyDir"] = {}
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,
            # A failed worker container restarts in its pod (same name and index); the
            # others fail fast and restart too, and all resume from the last checkpoint.
            "backoffLimit": 3 * workers,
            "template": {
                "metadata": {"labels": dict(metadata["labels"])},
                "spec": {
                    "subdomain": name,  # pod I is NAME-I.NAME through the headless Service
                    "restartPolicy": "OnFailure",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                        "runAsGroup": 1000, "fsGroup": 1000},
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": name}}, runs_volume],
                },
            },
        },
    }


def render_manifests(config_path, workers, image, name=None, port=23456, runs_claim=None,
                     namespace=None):
    """The manifests of `manifests` as one YAML document stream, for `kubectl apply -f -`.

    Args:
        config_path: the run's YAML config (validated first: a bad config fails here).
        workers, image, port, runs_claim, namespace: as in `manifests`.
        name: run name (default: the config's file name, made a DNS label).

    Returns:
        The YAML text.

    Example:
        >>> text = render_manifests("configs/tiny_reverse.yaml", 2, "attnlab-workbench:1.0")
    """
    from attnlab.train.config import load_config

    load_config(config_path)
    with open(config_path, encoding="utf-8") as f:
        config_text = f.read()
    if name is None:
        stem = os.path.splitext(os.path.basename(config_path))[0]
        name = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")
    objects = manifests(config_text, workers, image, name, port=port, runs_claim=runs_claim,
                        namespace=namespace)
    header = ("# attnlab: %d-worker run %r (attnlab kubernetes). Apply: kubectl apply -f FILE\n"
              % (workers, name))
    return header + yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
