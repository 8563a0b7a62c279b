"""`attnlab kubernetes`: the rendered manifests are valid objects and wire the workers together.

Schemas come from the official Kubernetes Python client's models (pinned in pyproject's dev
extra): each object is loaded into its typed model and serialized back; a misspelled field,
a wrong type or a missing required field makes the round trip fail. No cluster is needed.
This needs the client, a host test dependency: the container stage runs the unit suite on
TF 2.9 without this file.
"""
import os

import pytest
import yaml
from kubernetes.client import ApiClient, V1ConfigMap, V1Job, V1Service

from attnlab.train import launch
from attnlab.train.cli import main, parser
from attnlab.train.kubernetes import INDEX_ANNOTATION, manifests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tiny_reverse.yaml")
MODELS = {("v1", "ConfigMap"): V1ConfigMap, ("v1", "Service"): V1Service,
          ("batch/v1", "Job"): V1Job}


def _render(capsys, *extra):
    assert main(["kubernetes", CONFIG, "--workers", "3", "--image",
                 "registry.example/attnlab-workbench:1.0"] + list(extra)) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def test_every_object_validates_against_the_kubernetes_models(capsys):
    objects = _render(capsys, "--runs-claim", "attnlab-runs", "--namespace", "research")
    assert [o["kind"] for o in objects] == ["ConfigMap", "Service", "Job"]
    client = ApiClient()
    for obj in objects:
        model = MODELS[(obj["apiVersion"], obj["kind"])].from_dict(obj)
        assert client.sanitize_for_serialization(model) == obj, obj["kind"]


def test_a_misspelled_field_is_caught_by_the_check():
    job = manifests("x: 1", 2, "img:1", "run")[2]
    job["spec"]["completionsMode"] = job["spec"].pop("completionMode")
    model = V1Job.from_dict(job)
    assert ApiClient().sanitize_for_serialization(model) != job


def test_each_pod_gets_its_own_index_and_the_same_worker_list(capsys):
    config_map, service, job = _render(capsys)
    name = job["metadata"]["name"]
    assert name == "tiny-reverse"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == \
        spec["parallelism"] == 3
    pod = spec["template"]["spec"]
    # Pod I of an Indexed Job is named NAME-I; `subdomain` + the headless Service give it
    # the DNS name NAME-I.NAME, which is what --workers lists.
    assert pod["subdomain"] == service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None"
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
    container = pod["containers"][0]
    args = parser().parse_args(container["args"][1:])
    assert args.command == "launch" and args.index is None
    workers = launch.parse_workers(args.workers)
    port = container["ports"][0]["containerPort"]
    assert workers == [("%s-%d.%s" % (name, i, name), port) for i in range(3)]
    assert service["spec"]["ports"][0]["targetPort"] == port
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env[launch.INDEX_ENV] == "metadata.annotations['%s']" % INDEX_ANNOTATION
    for index in range(3):  # what each pod's launcher computes from its annotation
        os.environ[launch.INDEX_ENV] = str(index)
        try:
            assert launch.resolve_index(None, workers) == index
        finally:
            del os.environ[launch.INDEX_ENV]
    # The config travels in the ConfigMap, mounted where --config points.
    with open(CONFIG, encoding="utf-8") as f:
        assert config_map["data"]["config.yaml"] == f.read()
    mount = [m for m in container["volumeMounts"] if m["name"] == "config"][0]["mountPath"]
    assert args.config == mount + "/config.yaml"
    assert pod["securityContext"]["runAsNonRoot"] is True
    runs = [v for v in pod["volumes"] if v["name"] == "runs"][0]
    assert runs == {"name": "runs", "emptyDir": {}}


@pytest.mark.parametrize("extra, message", [
    (["--workers", "0"], "--workers: expected a positive number of workers, got 0"),
    (["--name", "Bad_Name"], "--name: 'Bad_Name' must be a DNS label"),
    (["--port", "80"], "--port: expected 1024-65535"),
    (["--image", "a b"], "--image: expected an image reference"),
])
def test_bad_input_names_the_option(capsys, extra, message):
    args = ["kubernetes", CONFIG, "--workers", "2", "--image", "img:1"] + extra
    assert main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
