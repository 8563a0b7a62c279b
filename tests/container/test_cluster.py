"""docker-compose.cluster.yml: two worker containers of the image, TF 2.9, one shared run.

The cluster is brought up twice in all, by one module fixture each time with the same
command: once uninterrupted, once with the chief container SIGKILLed mid-run and then
brought up again. The reference is one process in a container of the same image
(`attnlab train`, distribute: none) on the same global batch.
"""
import json
import os
import time

import pytest

from .conftest import METRICS, PROJECT_NAME, run

CLUSTER_PROJECT = PROJECT_NAME + "-cluster"
FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.cluster.yml"]
# 4 epochs x 8 steps of a tiny classifier; a checkpoint every 4 steps. At most 8 batches
# per epoch: see tests/train/test_launch.py.
CONFIG = """
task: {name: trigger, n_train: 128, n_val: 16, n_test: 16, num_filler: 12, max_length: 8}
model: {name: classifier, embed_dim: 8}
train: {epochs: 4, batch_size: 16, optimizer: sgd, learning_rate: 0.5, deterministic: true,
        checkpoint_every: 4, keep_checkpoints: 20, distribute: %s}
eval: {probe_size: 2}
"""
STEPS = 32


def _compose(engine, root, *args, run_name, check=True, timeout=600):
    env = dict(os.environ, ATTNLAB_CLUSTER_CONFIG="configs/cluster-e2e.yaml",
               ATTNLAB_CLUSTER_RUN=run_name)
    cmd = list(engine.compose_cmd) + ["-p", CLUSTER_PROJECT] + FILES + list(args)
    return run(cmd, cwd=str(root), env=env, check=check, timeout=timeout)


def _worker(engine, service):
    ids = engine("ps", "-a", "-q", "--filter", "label=com.docker.compose.project=" +
                 CLUSTER_PROJECT, "--filter", "label=com.docker.compose.service=" + service)
    found = ids.stdout.split()
    assert len(found) == 1, "expected one %s container, found %r" % (service, found)
    return found[0]


def _exit_code(engine, container, timeout=300):
    """Wait for `container` to stop; its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(engine("inspect", "-f", "{{json .State}}", container).stdout)
        if not state.get("Running"):
            return state["ExitCode"]
        time.sleep(1)
    raise AssertionError("%s still running after %ds:\n%s" % (
        container, timeout, engine("logs", container, check=False).stdout[-3000:]))


def _logs(engine, containers):
    return "\n".join("--- %s\n%s" % (c, engine("logs", c, check=False).stdout[-4000:])
                     for c in containers)


def _final_weights(engine, image, root, run_name):
    """{variable: array} of a run's newest checkpoint, read with TF 2.9 in the image."""
    script = (
        "import json, sys, tensorflow as tf\n"
        "path = tf.train.latest_checkpoint(sys.argv[1])\n"
        "reader = tf.train.load_checkpoint(path)\n"
        "names = [n for n, _ in tf.train.list_variables(path)\n"
        "         if n.startswith('model/') and n.endswith('VARIABLE_VALUE')]\n"
        "print(json.dumps({'path': path, 'weights': {n: reader.get_tensor(n).tolist()\n"
        "                                            for n in names}}))\n")
    result = engine("run", "--rm", "--network", "none", "--no-healthcheck", "--entrypoint",
                    "python3", "-v", "%s:/workspace/runs" % (root / "runs"), image["ref"],
                    "-c", script, "/workspace/runs/%s/checkpoints" % run_name, timeout=300)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["weights"], data
    return os.path.basename(data["path"]), data["weights"]


def _flat(value):
    if isinstance(value, list):
        return [x for item in value for x in _flat(item)]
    return [float(value)]


def _assert_same(got, want, rtol):
    assert got[0] == want[0] == "ckpt-%d" % STEPS
    assert sorted(got[1]) == sorted(want[1])
    for name, value in want[1].items():
        # numpy is not in this stage's environment: allclose by hand.
        got_values, want_values = _flat(got[1][name]), _flat(value)
        assert len(got_values) == len(want_values), name
        worst = max(abs(g - w) - (rtol / 10 + rtol * abs(w))
                    for g, w in zip(got_values, want_values))
        assert worst <= 0, "%s differs beyond rtol=%g" % (name, rtol)


@pytest.fixture(scope="module")
def cluster_root(engine, project, image):
    root = project["root"]
    (root / "configs" / "cluster-e2e.yaml").write_text(CONFIG % "multi_worker")
    (root / "configs" / "cluster-single.yaml").write_text(CONFIG % "none")
    uid, gid = os.stat(str(root)).st_uid, os.stat(str(root)).st_gid
    for name in ("cluster-e2e.yaml", "cluster-single.yaml"):
        os.chown(str(root / "configs" / name), uid, gid)
    yield root
    _compose(engine, root, "down", "-v", run_name="-", check=False, timeout=300)


@pytest.fixture(scope="module")
def one_process(engine, image, cluster_root):
    result = engine("run", "--rm", "--network", "none", "--no-healthcheck",
                    "-v", "%s:/workspace/runs" % (cluster_root / "runs"),
                    "-v", "%s:/workspace/configs" % (cluster_root / "configs"), image["ref"],
                    "attnlab", "train", "configs/cluster-single.yaml", "--name", "single",
                    check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    return _final_weights(engine, image, cluster_root, "single")


@pytest.fixture(scope="module")
def uninterrupted(engine, image, cluster_root):
    """`compose up` of the cluster file: both workers train the run "cluster" to the end."""
    started = time.monotonic()
    _compose(engine, cluster_root, "up", "-d", run_name="cluster")
    containers = [_worker(engine, "worker-%d" % i) for i in range(2)]
    codes = [_exit_code(engine, c) for c in containers]
    assert codes == [0, 0], _logs(engine, containers)
    logs = _logs(engine, containers)
    METRICS["cluster of 2 worker containers, up -> both exited, s"] = round(
        time.monotonic() - started, 1)
    _compose(engine, cluster_root, "down", run_name="cluster", check=False, timeout=300)
    return {"weights": _final_weights(engine, image, cluster_root, "cluster"), "logs": logs}


def test_two_worker_containers_train_the_weights_of_one_process(uninterrupted, one_process):
    _assert_same(uninterrupted["weights"], one_process, rtol=1e-5)
    assert "worker 1: run cluster finished" in uninterrupted["logs"]


def test_the_cluster_is_one_run_in_the_shared_runs_folder(engine, image, cluster_root,
                                                          uninterrupted):
    runs = cluster_root / "runs"
    status = json.loads((runs / "cluster" / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == STEPS, status
    assert status["workers"] == ["worker-0:23456", "worker-1:23456"]
    assert (runs / "cluster" / "train.log").read_text().count("epoch 4/4") == 1
    listing = engine("run", "--rm", "--network", "none", "--no-healthcheck",
                     "-v", "%s:/workspace/runs" % runs, image["ref"], "attnlab", "runs")
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert ["cluster", "finished"] in [r[:2] for r in rows], listing.stdout


def test_a_killed_chief_container_stops_the_other_and_up_again_resumes_to_the_same_weights(
        engine, image, cluster_root, uninterrupted):
    root = cluster_root
    _compose(engine, root, "up", "-d", run_name="faulty")
    state = root / "runs" / "faulty" / "checkpoints" / "checkpoint"
    chief, other = (_worker(engine, "worker-%d" % i) for i in range(2))
    deadline = time.monotonic() + 300
    while not (state.exists() and '"ckpt-8"' in state.read_text()):
        assert time.monotonic() < deadline, _logs(engine, [chief, other])
        time.sleep(0.1)
    engine("kill", "-s", "KILL", chief)
    killed = time.monotonic()
    code = _exit_code(engine, other, timeout=120)
    stopped_after = time.monotonic() - killed
    METRICS["cluster: worker-1 stopped after the chief's SIGKILL, s"] = round(stopped_after, 1)
    logs = engine("logs", other, check=False).stdout
    assert code not in (0, None), logs[-4000:]
    assert "lost contact with another worker" in logs, logs[-4000:]
    assert stopped_after < 90, "worker-1 took %.0f s to stop after the chief died" % stopped_after
    status = json.loads((root / "runs" / "faulty" / "status.json").read_text())
    assert status.get("step", 0) < STEPS, status

    # The same command again (after `down`: the stopped containers are removed).
    _compose(engine, root, "down", run_name="faulty", check=False, timeout=300)
    _compose(engine, root, "up", "-d", run_name="faulty")
    containers = [_worker(engine, "worker-%d" % i) for i in range(2)]
    codes = [_exit_code(engine, c) for c in containers]
    assert codes == [0, 0], _logs(engine, containers)
    assert "resumed from ckpt-" in (root / "runs" / "faulty" / "train.log").read_text()
    _assert_same(_final_weights(engine, image, root, "faulty"), uninterrupted["weights"],
                 rtol=1e-6)
