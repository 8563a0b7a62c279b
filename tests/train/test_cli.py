"""The attnlab command line: train, runs, logs, stop; detached runs; no overwrites."""
import json
import os
import subprocess
import sys
import time

import pytest

from attnlab.train.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "tiny_reverse.yaml")
SMALL_CLASSIFIER = """
task: {name: trigger, n_train: 256, n_val: 32, n_test: 32, num_filler: 10, max_length: 10}
model: {name: classifier, embed_dim: 8}
train: {epochs: 400, batch_size: 32}
eval: {probe_size: 2}
"""


def _cli(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "attnlab"] + list(args), env=env,
                          capture_output=True, timeout=timeout, text=True)


def _status(runs, name):
    with open(os.path.join(runs, name, "status.json")) as f:
        return json.load(f)


def test_bad_config_fails_before_creating_the_run(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("task: {name: reverse}\nmodel: {name: transformer}\n"
                      "train: {epochs: 2, batchsize: 8}\n")
    code = main(["train", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    assert "train.batchsize: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad").exists()


def test_existing_run_is_never_overwritten(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "tiny_reverse").mkdir(parents=True)
    (runs / "tiny_reverse" / "train.log").write_text("precious\n")
    assert main(["train", TINY, "--runs-dir", str(runs)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (runs / "tiny_reverse" / "train.log").read_text() == "precious\n"


def test_runs_and_logs_read_the_run_folders(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "status.json").write_text(json.dumps(
        {"state": "finished", "epoch": 3, "step": 30, "metrics": {"val_loss": 0.25}}))
    (runs / "a" / "train.log").write_text("epoch 1/3 ...\nepoch 3/3 ...\n")
    (runs / "b").mkdir()
    (runs / "b" / "status.json").write_text(json.dumps(
        {"state": "running", "pid": 2 ** 22 + 12345, "epoch": 1, "step": 4, "metrics": {}}))
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["NAME", "STATE", "EPOCH", "STEP"]
    assert out[1].split()[:4] == ["a", "finished", "3", "30"] and "val_loss=0.25" in out[1]
    assert out[2].split()[:2] == ["b", "died"]  # its process is gone
    assert main(["logs", "a", "-f", "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out.startswith("epoch 1/3 ...\nepoch 3/3 ...\n[run a: finished]")
    assert main(["logs", "zzz", "--runs-dir", str(runs)]) == 1
    assert "no run named 'zzz'" in capsys.readouterr().err


@pytest.mark.slow
def test_detached_run_survives_stops_cleanly_and_resumes(tmp_path):
    runs = str(tmp_path / "runs")
    config = tmp_path / "slow.yaml"
    # A small classifier (fast to start) with enough epochs to be stopped in the middle.
    config.write_text(SMALL_CLASSIFIER)
    started = _cli("train", str(config), "--name", "bg", "--detach", "--runs-dir", runs)
    assert started.returncode == 0, started.stderr
    assert "started run bg" in started.stdout and "attnlab logs bg -f" in started.stdout
    pid = _status(runs, "bg")["pid"]
    assert os.getsid(pid) == pid  # its own session: closing the terminal does not end it
    deadline = time.time() + 120
    while "epoch 1/400" not in open(os.path.join(runs, "bg", "train.log")).read() \
            if os.path.exists(os.path.join(runs, "bg", "train.log")) else True:
        assert time.time() < deadline, open(os.path.join(runs, "bg", "output.log")).read()
        time.sleep(0.3)
    listing = _cli("runs", "--runs-dir", runs)
    assert "bg" in listing.stdout and "running" in listing.stdout
    stopped = _cli("stop", "bg", "--runs-dir", runs)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    status = _status(runs, "bg")
    assert status["state"] == "stopped"
    step = status["step"]
    assert os.path.exists(os.path.join(runs, "bg", "checkpoints", "ckpt-%d.index" % step))
    log = _cli("logs", "bg", "--runs-dir", runs).stdout
    assert "stopped by request" in log
    # Resume in the foreground for a few epochs: it continues from the stop's checkpoint.
    cfg = os.path.join(runs, "bg", "config.yaml")
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write(text.replace("epochs: 400", "epochs: %d" % (step // 8 + 2)))
    resumed = _cli("train", str(config), "--name", "bg", "--resume", "--runs-dir", runs)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from ckpt-%d at step %d" % (step, step) in _cli(
        "logs", "bg", "--runs-dir", runs).stdout
    assert _status(runs, "bg")["state"] == "finished"
    assert os.path.exists(os.path.join(runs, "bg", "metrics.json"))


def test_runs_folder_defaults_to_attnlab_runs_dir_wherever_the_command_runs(
        tmp_path, monkeypatch, capsys):
    """The image sets ATTNLAB_RUNS_DIR to the mounted runs folder: `attnlab runs` started in
    another directory (an SSH session's) reads it, and --runs-dir still wins."""
    mounted = tmp_path / "mounted-runs"
    (mounted / "from-env").mkdir(parents=True)
    (mounted / "from-env" / "status.json").write_text(json.dumps({"state": "finished"}))
    elsewhere = tmp_path / "home"
    (elsewhere / "runs" / "local-run").mkdir(parents=True)
    (elsewhere / "runs" / "local-run" / "status.json").write_text(
        json.dumps({"state": "finished"}))
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("ATTNLAB_RUNS_DIR", str(mounted))
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "from-env" in out and "local-run" not in out
    assert main(["runs", "--runs-dir", "runs"]) == 0
    out = capsys.readouterr().out
    assert "local-run" in out and "from-env" not in out
    monkeypatch.delenv("ATTNLAB_RUNS_DIR")
    assert main(["runs"]) == 0
    assert "local-run" in capsys.readouterr().out
