"""The real `attnlab` command on bad input: exit status != 0, one clear line on stderr that
names the problem, no traceback, and no run folder left behind."""
import json
import os
import subprocess
import sys
import time

import pytest

from attnlab.train.runner import RunExistsError, prepare_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_TASK = ("task: {name: reverse, seed: 0, n_train: 64, n_val: 8, n_test: 8, num_symbols: 6, "
             "min_length: 2, max_length: 5}\n")
TINY_MODEL = ("model: {name: transformer, d_model: 16, num_heads: 2, ff_dim: 32, num_layers: 1, "
              "max_length: 8}\n")
TINY = TINY_TASK + TINY_MODEL + "train: {epochs: 1, batch_size: 32}\neval: {probe_size: 2}\n"


def _cli(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("ATTNLAB_RUNS_DIR", None)
    return subprocess.run([sys.executable, "-m", "attnlab"] + [str(a) for a in args], env=env,
                          capture_output=True, timeout=timeout, text=True)


def _one_clear_line(result, *needles, code=None):
    assert result.returncode != 0, result.stdout + result.stderr
    if code is not None:
        assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def runs(tmp_path):
    return tmp_path / "runs"


def _config(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _nothing_left(runs, name="c"):
    assert not (runs / name).exists(), os.listdir(str(runs))


# Configs the model or the task refuses although their types are right: these import
# TensorFlow and build the task and model once, so they are the slow ones (no training).
@pytest.mark.parametrize("text,needles", [
    (TINY.replace("n_train: 64", "n_train: -5"),
     ("bad config", "task 'reverse'", "n_train must be a positive integer, got -5")),
    (TINY.replace("d_model: 16", "d_model: 15"),
     ("bad config", "d_model (15) must be divisible by num_heads (2)")),
    (TINY.replace("max_length: 5", "max_length: 12"),
     ("bad config", "does not fit task 'reverse'", "exceeds the model's max_length 8")),
    (TINY.replace("min_length: 2", "min_length: 6"), ("min_length (6) must be <= max_length",)),
    (TINY.replace("learning_rate", "x").replace("batch_size: 32", "learning_rate: .nan"),
     ("train.learning_rate: expected a finite number, got nan",)),
    (TINY.replace("batch_size: 32", "batch_size: 32, clip_norm: .inf"),
     ("train.clip_norm: expected a finite number, got inf",)),
    ("task: {name: trigger, n_train: 32, n_val: 8, n_test: 8}\nmodel: {name: transformer}\n",
     ("model.name: 'transformer'",)),
], ids=["negative-n_train", "heads", "too-long-for-model", "min-over-max", "nan-lr",
        "inf-clip", "model-for-task"])
def test_train_refuses_before_creating_the_run(tmp_path, runs, text, needles):
    config = _config(tmp_path, text)
    _one_clear_line(_cli("train", config, "--runs-dir", runs), *needles, code=2)
    _nothing_left(runs)


@pytest.mark.parametrize("content,needles", [
    (b"task: {name: reverse}\n# caf\xe9\n", ("is not UTF-8 text",)),
    ("task: {name: reverse\nmodel: x\n", ("c.yaml:2:6 is not valid YAML",)),
    ("task:\n  name: reverse\n model: x\n", ("c.yaml:3:2 is not valid YAML",)),
    ("", ("is empty",)),
])
def test_unreadable_config_files(tmp_path, runs, content, needles):
    config = _config(tmp_path, content)
    _one_clear_line(_cli("train", config, "--runs-dir", runs), *needles, code=2)
    _nothing_left(runs)


def test_missing_config_and_folder_as_config(tmp_path, runs):
    _one_clear_line(_cli("train", tmp_path / "nope.yaml", "--runs-dir", runs),
                    "cannot read config", "No such file", code=2)
    (tmp_path / "adir").mkdir()
    _one_clear_line(_cli("train", tmp_path / "adir", "--runs-dir", runs), "is a folder", code=2)
    assert not runs.exists()


def test_runs_dir_that_is_a_file(tmp_path):
    config = _config(tmp_path, TINY)
    afile = tmp_path / "runs-file"
    afile.write_text("not a folder")
    for args in (["train", config], ["launch", config, "--workers", "localhost:1", "--index",
                                     "0"], ["runs"], ["logs", "x"], ["stop", "x"]):
        _one_clear_line(_cli(*(args + ["--runs-dir", afile])), "is a file", code=2)
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "with space", "", "x" * 200])
def test_bad_run_names(tmp_path, runs, name):
    config = _config(tmp_path, TINY)
    for verb in (["train", config, "--name", name], ["logs", name], ["stop", name]):
        _one_clear_line(_cli(*(verb + ["--runs-dir", runs])), "bad run name", code=2)
    assert not runs.exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("args,needle", [
    (["train"], "the following arguments are required: config"),
    (["stop", "r", "--timeout", "soon"], "invalid float value: 'soon'"),
    (["kubernetes", "c.yaml", "--workers", "two", "--image", "x"], "invalid int value"),
    (["export", "r", "out", "--max-length", "1.5"], "invalid int value"),
    (["fly"], "invalid choice: 'fly'"),
    (["train", "c.yaml", "--name"], "expected one argument"),
])
def test_argument_errors_are_one_line(args, needle):
    _one_clear_line(_cli(*args), needle, "--help", code=2)


def test_verbs_on_a_missing_run(tmp_path, runs):
    runs.mkdir()
    config = _config(tmp_path, TINY)
    _one_clear_line(_cli("logs", "ghost", "--runs-dir", runs), "no run named 'ghost'")
    _one_clear_line(_cli("stop", "ghost", "--runs-dir", runs), "no run named 'ghost'")
    _one_clear_line(_cli("train", config, "--name", "ghost", "--resume", "--runs-dir", runs),
                    "cannot resume run 'ghost'")
    _one_clear_line(_cli("export", runs / "ghost", tmp_path / "out"), "no run folder")
    assert os.listdir(str(runs)) == []


def test_damaged_status_json(runs):
    (runs / "good").mkdir(parents=True)
    (runs / "good" / "status.json").write_text(json.dumps({"state": "finished", "epoch": 1}))
    for name, text in (("broken", "{half"), ("listed", "[1, 2]"), ("stateless", "{}")):
        (runs / name).mkdir()
        (runs / name / "status.json").write_text(text)
    (runs / "latin").mkdir()
    (runs / "latin" / "status.json").write_bytes(b'{"state": "caf\xe9"}')
    listing = _cli("runs", "--runs-dir", runs)
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert rows["good"].split()[1] == "finished"
    assert "damaged" in rows["broken"] and "not JSON" in rows["broken"]
    assert "expected a JSON object" in rows["listed"]
    assert "unknown state" in rows["stateless"]
    assert "not UTF-8" in rows["latin"]
    _one_clear_line(_cli("stop", "broken", "--runs-dir", runs), "damaged status.json")
    _one_clear_line(_cli("logs", "broken", "-f", "--runs-dir", runs, timeout=30),
                    "damaged status.json", "not following")


def test_stop_with_bad_pid_or_timeout(runs):
    (runs / "r").mkdir(parents=True)
    (runs / "r" / "status.json").write_text(json.dumps({"state": "running", "pid": "abc"}))
    _one_clear_line(_cli("stop", "r", "--runs-dir", runs), "no valid pid")
    _one_clear_line(_cli("stop", "r", "--timeout", "nan", "--runs-dir", runs), "--timeout",
                    code=2)


def test_launch_kubernetes_doctor_bad_arguments(tmp_path, runs):
    config = _config(tmp_path, TINY)
    _one_clear_line(_cli("launch", config, "--workers", "nothost", "--index", "0",
                         "--runs-dir", runs), "--workers", code=2)
    _one_clear_line(_cli("launch", config, "--workers", "localhost:1,localhost:2", "--index",
                         "7", "--runs-dir", runs), "--index", code=2)
    _one_clear_line(_cli("kubernetes", config, "--workers", "0", "--image", "x"), "--workers",
                    code=2)
    _one_clear_line(_cli("kubernetes", tmp_path / "nope.yaml", "--workers", "2", "--image",
                         "x"), "cannot read config", code=2)
    _one_clear_line(_cli("doctor", "--checkout", tmp_path / "nowhere"), "--checkout",
                    "is not a folder", code=2)
    assert not runs.exists()


def test_resume_replays_no_bad_stored_config(tmp_path, runs):
    """A run folder whose stored config cannot build (left by an older attnlab) is refused
    on --resume with one line, and is not touched."""
    (runs / "old").mkdir(parents=True)
    (runs / "old" / "config.yaml").write_text(TINY.replace("d_model: 16", "d_model: 15"))
    (runs / "old" / "status.json").write_text(json.dumps({"state": "failed", "step": 0}))
    before = sorted(os.listdir(str(runs / "old")))
    config = _config(tmp_path, TINY)
    _one_clear_line(_cli("train", config, "--name", "old", "--resume", "--runs-dir", runs),
                    "must be divisible by num_heads", code=2)
    assert sorted(os.listdir(str(runs / "old"))) == before


# prepare_run in process: which leftover folders a new start may replace.
def _leftover(runs, name, status, checkpoint=False):
    folder = runs / name
    (folder / "checkpoints").mkdir(parents=True)
    if status is not None:
        (folder / "status.json").write_text(json.dumps(status))
    if checkpoint:
        (folder / "checkpoints" / "ckpt-4.index").write_text("x")
    return folder


@pytest.mark.parametrize("status", [{"state": "failed", "step": 0, "error": "ValueError: x"},
                                    {"state": "created", "step": 0}])
def test_a_failed_start_is_replaced_by_a_new_one(runs, status):
    from attnlab.train.config import validate_config

    folder = _leftover(runs, "r", status)
    old = time.time() - 120  # a "created" folder is replaced once it is a minute old
    os.utime(str(folder / "status.json"), (old, old))
    config = validate_config({"task": {"name": "reverse"}, "model": {"name": "transformer"}})
    run = prepare_run(config, str(runs), "r")
    assert run.read_status()["state"] == "created"
    assert (folder / "config.yaml").exists()


def test_a_start_still_in_state_created_is_not_replaced(runs):
    # Another start of the same name, between creating its folder and "running".
    from attnlab.train.config import validate_config

    folder = _leftover(runs, "r", {"state": "created", "step": 0})
    config = validate_config({"task": {"name": "reverse"}, "model": {"name": "transformer"}})
    with pytest.raises(RunExistsError):
        prepare_run(config, str(runs), "r")
    assert not (folder / "config.yaml").exists()


@pytest.mark.parametrize("status,checkpoint", [
    ({"state": "failed", "step": 12}, False),       # it had trained
    ({"state": "failed", "step": 0}, True),         # it has a checkpoint
    ({"state": "finished", "step": 0}, False),
    ({"state": "stopped", "step": 0}, False),
    (None, False),                                  # not ours to judge: no status
])
def test_runs_with_training_are_never_replaced(runs, status, checkpoint):
    from attnlab.train.config import validate_config

    folder = _leftover(runs, "r", status, checkpoint)
    (folder / "train.log").write_text("precious\n")
    config = validate_config({"task": {"name": "reverse"}, "model": {"name": "transformer"}})
    with pytest.raises(RunExistsError):
        prepare_run(config, str(runs), "r")
    assert (folder / "train.log").read_text() == "precious\n"


@pytest.mark.slow
def test_fixed_config_reuses_the_name_of_a_failed_start(tmp_path, runs):
    bad = _config(tmp_path, TINY.replace("d_model: 16", "d_model: 15"), "r.yaml")
    _one_clear_line(_cli("train", bad, "--runs-dir", runs), "divisible", code=2)
    _nothing_left(runs, "r")
    # A failed start as older versions left it: replaced by the fixed config's run.
    _leftover(runs, "r", {"state": "failed", "step": 0, "error": "ValueError: x"})
    good = _config(tmp_path, TINY, "r.yaml")
    result = _cli("train", good, "--runs-dir", runs, timeout=600)
    assert result.returncode == 0, result.stderr
    with open(str(runs / "r" / "status.json")) as f:
        assert json.load(f)["state"] == "finished"
