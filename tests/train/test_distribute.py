"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 match one process."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from attnlab.train.launch import free_local_ports

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONHASHSEED="0")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _load(path):
    with np.load(path) as data:
        n = len(data.files) - 2
        return [data["arr_%d" % i] for i in range(n)], float(data["loss"]), int(data["replicas"])


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "single.npz"
    single = subprocess.run([sys.executable, WORKER, str(path)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert single.returncode == 0, single.stdout.decode(errors="replace")[-3000:]
    return path


def _assert_matches(path, reference_path, replicas):
    reference, ref_loss, ref_replicas = _load(reference_path)
    assert ref_replicas == 1
    weights, loss, got_replicas = _load(path)
    assert got_replicas == replicas
    # The loss is averaged over the global batch, so 2 x (batch / 2) == 1 x batch.
    for got, want in zip(weights, reference):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)


@pytest.mark.slow
def test_two_workers_agree_with_one_process_on_the_same_global_batch(tmp_path,
                                                                     single_process):
    ports = free_local_ports(2)
    cluster = {"worker": ["127.0.0.1:%d" % p for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, str(tmp_path / ("worker%d.npz" % index)), "multi_worker"],
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [proc.communicate(timeout=120)[0].decode(errors="replace") for proc in procs]
    for proc in procs:
        # A worker that fails makes the other fail too: show both logs.
        assert proc.returncode == 0, "\n".join(
            "--- worker %d\n%s" % (i, out[-3000:]) for i, out in enumerate(outputs))
    for index in range(2):
        _assert_matches(tmp_path / ("worker%d.npz" % index), single_process, replicas=2)
    with np.load(single_process) as data:  # training moved the weights away from zero
        assert np.abs(data["arr_0"]).max() > 0


@pytest.mark.slow
def test_mirrored_strategy_on_two_devices_agrees_with_one_device(tmp_path, single_process):
    out = tmp_path / "mirrored.npz"
    run = subprocess.run([sys.executable, WORKER, str(out), "mirrored"], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert run.returncode == 0, run.stdout.decode(errors="replace")[-3000:]
    _assert_matches(out, single_process, replicas=2)


CLI_CONFIG = """
task: {name: trigger, n_train: 128, n_val: 16, n_test: 16, num_filler: 12, max_length: 8}
model: {name: classifier, embed_dim: 8}
# SGD: Adam's first steps follow the sign of each gradient element, which float rounding
# flips where an element is near zero.
train: {epochs: 2, batch_size: 16, distribute: %s, optimizer: sgd, learning_rate: 0.5}
eval: {probe_size: 2}
"""


def _train_cli(config, runs, env):
    return subprocess.Popen([sys.executable, "-m", "attnlab", "train", str(config),
                             "--name", "run", "--runs-dir", str(runs)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finished_metrics(runs):
    with open(os.path.join(str(runs), "run", "status.json")) as f:
        status = json.load(f)
    assert status["state"] == "finished", status
    return status["metrics"]


@pytest.mark.slow
def test_attnlab_train_on_two_workers_exits_cleanly_and_matches_one_process(tmp_path):
    """`attnlab train` with distribute: multi_worker, one process per worker (each with its own
    runs folder, as on separate machines): both exit 0, and the chief's run records the same
    training as one process with distribute: none."""
    single_config, multi_config = tmp_path / "single.yaml", tmp_path / "multi.yaml"
    single_config.write_text(CLI_CONFIG % "none")
    multi_config.write_text(CLI_CONFIG % "multi_worker")
    single = _train_cli(single_config, tmp_path / "single", _env())
    single_out = single.communicate(timeout=180)[0].decode(errors="replace")
    assert single.returncode == 0, single_out[-3000:]

    ports = free_local_ports(2)
    cluster = {"worker": ["127.0.0.1:%d" % p for p in ports]}
    procs = [_train_cli(multi_config, tmp_path / ("worker%d" % index), _env(
        TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})))
        for index in range(2)]
    outputs = [proc.communicate(timeout=180)[0].decode(errors="replace") for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(
        "--- worker %d\n%s" % (i, out[-3000:]) for i, out in enumerate(outputs))
    assert "run run finished" in outputs[0]
    want, got = _finished_metrics(tmp_path / "single"), _finished_metrics(tmp_path / "worker0")
    assert got["step"] == want["step"] == 16  # 2 epochs of 128 / 16
    for key in ("loss", "accuracy", "val_loss", "test_accuracy", "test_attention_on_triggers"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
