"""Run folder: layout, atomic status writes, log lines."""
import json
import os

import pytest

from attnlab.train import run_dir as run_dir_module
from attnlab.train.run_dir import RunDir, atomic_write_text, read_status


def test_layout_and_status_merge(tmp_path):
    run = RunDir(str(tmp_path / "demo"))
    for sub in ("checkpoints", "tb", "attention"):
        assert (tmp_path / "demo" / sub).is_dir()
    assert run.read_status() is None
    run.write_status("running", pid=123, epoch=0)
    run.write_status("running", epoch=2, metrics={"loss": 0.5})
    status = read_status(str(tmp_path / "demo"))
    assert status["pid"] == 123 and status["epoch"] == 2 and status["metrics"] == {"loss": 0.5}
    run.write_status("failed", error="NonFiniteLossError: step 7")
    assert json.loads((tmp_path / "demo" / "status.json").read_text())["state"] == "failed"
    assert sorted(os.listdir(tmp_path / "demo")) == ["attention", "checkpoints", "status.json",
                                                     "tb"]  # no temporary files left


def test_log_appends_one_line_per_call(tmp_path):
    run = RunDir(str(tmp_path / "demo"))
    run.log("epoch 1/2 loss 0.5")
    run.log("epoch 2/2 loss 0.25")
    lines = (tmp_path / "demo" / "train.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["epoch 1/2 loss 0.5",
                                                        "epoch 2/2 loss 0.25"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "status.json")
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(run_dir_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert open(path).read() == "old"
    assert os.listdir(str(tmp_path)) == ["status.json"]


def test_unknown_state_is_refused(tmp_path):
    with pytest.raises(ValueError, match="state must be one of .* got 'paused'"):
        RunDir(str(tmp_path / "x")).write_status("paused")
