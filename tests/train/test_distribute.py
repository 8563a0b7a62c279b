"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 match one process."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


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
    ports = _free_ports(2)
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
