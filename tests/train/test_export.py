"""attnlab export: SavedModels of trained runs that serve what the in-memory models predict,
loaded by plain TensorFlow (no attnlab), saved_model_cli and the CLI's refusals."""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from attnlab.decoding import greedy_decode
from attnlab.train.cli import main
from attnlab.train.config import load_config, validate_config
from attnlab.train.export import export_run, load_run_model, output_names
from attnlab.train.runner import prepare_run, run_training

# Tiny runs of two epochs (a checkpoint after each): one per exportable model kind.
CONFIGS = {
    "classifier": {
        "task": {"name": "trigger", "n_train": 64, "n_val": 16, "n_test": 16,
                 "num_filler": 8, "max_length": 8},
        "model": {"name": "classifier", "embed_dim": 8, "attention": "multi_head",
                  "num_heads": 2},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01}},
    "transformer": {
        "task": {"name": "reverse", "n_train": 64, "n_val": 16, "n_test": 16,
                 "num_symbols": 6, "min_length": 2, "max_length": 5},
        "model": {"name": "transformer", "d_model": 16, "num_heads": 2, "ff_dim": 32,
                  "num_layers": 1, "max_length": 8},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.003}},
    "rnn_seq2seq": {
        "task": {"name": "copy", "n_train": 64, "n_val": 16, "n_test": 16,
                 "num_symbols": 5, "min_length": 2, "max_length": 4},
        "model": {"name": "rnn_seq2seq", "embed_dim": 8, "units": 16, "attention": "luong"},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01}},
}
TRANSFORMER_ATTENTION = ("encoder_0_self_attention", "decoder_0_self_attention",
                         "decoder_0_cross_attention")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, config in CONFIGS.items():
        config = validate_config(dict(config, eval={"probe_size": 2}))
        config["train"]["verbose"] = 0
        run_training(config, prepare_run(config, str(root), name))
    return root


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """Each run exported with its attention outputs, as TensorFlow Serving lays them out."""
    root = tmp_path_factory.mktemp("models")
    return {name: export_run(str(runs / name), str(root / name / "1"), attention=True)
            for name in CONFIGS}


@pytest.fixture(scope="module")
def restored(runs):
    """{name: (model, task, config, checkpoint)} of each run's newest checkpoint, loaded once
    (decoding traces once per model)."""
    return {name: load_run_model(str(runs / name)) for name in CONFIGS}


@pytest.fixture(scope="module")
def expected(restored):
    """{name: (test tokens, the in-memory model's outputs on them)}."""
    out = {}
    for name, (model, task, _, _) in restored.items():
        tokens = _inputs(task)
        out[name] = tokens, _reference(model, task, tokens)
    return out


@pytest.fixture(scope="module")
def loaded(exported):
    """{name: the export loaded by tf.saved_model.load} (kept alive for its signatures)."""
    return {name: tf.saved_model.load(result["path"]) for name, result in exported.items()}


@pytest.fixture(scope="module")
def served(loaded, expected):
    """{name: the serving_default outputs on the test tokens of `expected`}."""
    return {name: {k: v.numpy() for k, v in obj.signatures["serving_default"](
        tokens=tf.constant(expected[name][0])).items()} for name, obj in loaded.items()}


def _inputs(task):
    """Test-split token ids with three more columns of padding than the task's width."""
    x, _, _ = task.arrays("test")
    ids = x["source"][:6] if task.kind == "seq2seq" else x[:6]
    return np.pad(ids, [(0, 0), (0, 3)]).astype(np.int32)


def _reference(model, task, tokens):
    """What the signature must return, computed by the in-memory model and attnlab."""
    if task.kind != "seq2seq":
        logits, weights = model(tokens, training=False, return_attention=True)
        return {"probabilities": tf.nn.softmax(logits).numpy(),
                "label": np.argmax(logits.numpy(), -1),
                "attention": weights["attention"].numpy()}
    ids = greedy_decode(model, tokens, task.arrays("test")[1].shape[1])
    target_in = np.concatenate([np.ones([len(ids), 1], np.int32), ids[:, :-1]], axis=1)
    _, weights = model({"source": tokens, "target_in": target_in}, training=False,
                       return_attention=True)
    out = {"target_ids": ids}
    out.update({k.replace("/", "_"): v.numpy() for k, v in weights.items()})
    return out


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if key in ("label", "target_ids"):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            np.testing.assert_allclose(got[key], value, atol=1e-5, err_msg=key)


def _serve(path, tokens):
    model = tf.saved_model.load(path)  # referenced while its signature runs
    out = model.signatures["serving_default"](tokens=tf.constant(tokens))
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_signature_serves_the_in_memory_models_predictions(restored, expected, exported,
                                                           loaded, served, name):
    _, task, _, checkpoint = restored[name]
    assert os.path.basename(checkpoint) == "ckpt-8"  # the newest of the two
    assert exported[name]["checkpoint"] == checkpoint
    got = served[name]
    _assert_same(got, expected[name][1])
    assert set(got) == set(exported[name]["outputs"])
    signature = loaded[name].signatures["serving_default"]
    spec = signature.structured_input_signature[1]["tokens"]
    assert spec.dtype == tf.int32 and spec.shape.as_list() == [None, None]
    if task.kind == "seq2seq":
        assert got["target_ids"].dtype == np.int32
        assert got["target_ids"].shape == (6, task.arrays("test")[1].shape[1])
    else:
        assert got["label"].dtype == np.int32 and got["label"].shape == (6,)
        assert got["probabilities"].shape == (6, task.num_classes)


def test_attention_outputs_have_the_documented_shapes_and_rows_sum_to_one(expected, exported,
                                                                         served):
    tokens = expected["transformer"][0]
    real = tokens != 0
    batch, source = tokens.shape
    out = served["transformer"]
    length = out["target_ids"].shape[1]
    assert exported["transformer"]["outputs"] == {
        "target_ids": "(B, %d) int32" % length,
        "encoder_0_self_attention": "(B, 2, T, T) float32",
        "decoder_0_self_attention": "(B, 2, %d, %d) float32" % (length, length),
        "decoder_0_cross_attention": "(B, 2, %d, T) float32" % length}
    encoder, decoder, cross = (out[k] for k in TRANSFORMER_ATTENTION)
    assert encoder.shape == (batch, 2, source, source)
    assert decoder.shape == (batch, 2, length, length)
    assert cross.shape == (batch, 2, length, source)
    rows = encoder.sum(-1).transpose(0, 2, 1)  # (B, T, H)
    np.testing.assert_allclose(rows[real], 1.0, atol=1e-5)
    np.testing.assert_allclose(cross.sum(-1), 1.0, atol=1e-5)  # every query sees the source
    assert np.all(cross.transpose(0, 3, 1, 2)[~real] == 0)  # never on padding
    np.testing.assert_allclose(decoder.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(np.ones([length, length]), 1) * decoder == 0)  # causal
    tokens = expected["classifier"][0]
    weights = served["classifier"]["attention"]
    assert weights.shape == (len(tokens), 2, tokens.shape[1], tokens.shape[1])
    rows = weights.sum(-1).transpose(0, 2, 1)
    np.testing.assert_allclose(rows[tokens != 0], 1.0, atol=1e-5)
    assert np.all(weights.transpose(0, 3, 1, 2)[tokens == 0] == 0)
    rnn = served["rnn_seq2seq"]
    assert rnn["cross_attention"].shape[:3] == (6, 1, rnn["target_ids"].shape[1])
    np.testing.assert_allclose(rnn["cross_attention"].sum(-1), 1.0, atol=1e-5)


def test_vocabularies_are_an_asset_of_the_model(restored, exported, loaded):
    for name in ("classifier", "transformer"):
        _, task, config, _ = restored[name]
        path = os.path.join(exported[name]["path"], "assets", "vocab.json")
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
        assert vocab["source_vocab"] == task.source_vocab.tokens
        assert vocab["source_vocab"][:4] == ["<pad>", "<s>", "</s>", "<unk>"]
        assert vocab["special_ids"] == {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
        assert vocab["checkpoint"] == "ckpt-8" and vocab["attention"] is True
        assert vocab["model"] == config["model"] and vocab["task"] == task.name
        if name == "transformer":
            assert vocab["target_vocab"] == task.target_vocab.tokens
            assert vocab["max_length"] == task.arrays("test")[1].shape[1]
        else:
            assert vocab["target_vocab"] is None and vocab["num_classes"] == task.num_classes
        assert loaded[name].vocab.asset_path.numpy().decode() == path


# Run by a plain Python with attnlab made unimportable (it is installed in the test venv).
FRESH_PROCESS = textwrap.dedent("""
    import importlib.abc, sys

    class NoAttnlab(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "attnlab" or name.startswith("attnlab."):
                raise ModuleNotFoundError("attnlab is blocked in this process")
            return None

    sys.meta_path.insert(0, NoAttnlab())
    try:
        import attnlab  # noqa: F401
        raise SystemExit("attnlab is importable")
    except ModuleNotFoundError:
        pass
    import json
    import numpy as np
    import tensorflow as tf

    jobs = json.loads(sys.argv[1])
    for name, (model_dir, tokens_file, out_file) in jobs.items():
        signature = tf.saved_model.load(model_dir).signatures["serving_default"]
        out = signature(tokens=tf.constant(np.load(tokens_file)))
        np.savez(out_file, **{k: v.numpy() for k, v in out.items()})
    assert "attnlab" not in sys.modules, sorted(m for m in sys.modules if "attnlab" in m)
    print("served without attnlab")
""")


def test_exports_serve_in_a_fresh_process_without_attnlab(expected, exported, tmp_path):
    jobs = {}
    for name in CONFIGS:
        tokens = expected[name][0]
        np.save(str(tmp_path / (name + ".npy")), tokens)
        jobs[name] = [exported[name]["path"], str(tmp_path / (name + ".npy")),
                      str(tmp_path / (name + ".out.npz"))]
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(script), json.dumps(jobs)], cwd=str(tmp_path),
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "served without attnlab" in result.stdout
    for name in CONFIGS:
        with np.load(jobs[name][2]) as got:
            _assert_same(dict(got), expected[name][1])


def _saved_model_cli(*args):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    command = [cli] if os.path.exists(cli) else ["saved_model_cli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(command + list(args), capture_output=True, text=True, env=env,
                          timeout=300)


def test_saved_model_cli_shows_and_runs_the_signature(expected, exported):
    path = exported["transformer"]["path"]
    shown = _saved_model_cli("show", "--dir", path, "--all")
    assert shown.returncode == 0, shown.stderr[-3000:]
    text = shown.stdout
    assert "signature_def['serving_default']" in text
    assert re.search(r"inputs\['tokens'\] tensor_info:\s+dtype: DT_INT32\s+shape: \(-1, -1\)",
                     text)
    for name in ("target_ids",) + TRANSFORMER_ATTENTION:
        assert "outputs['%s']" % name in text
    tokens = expected["transformer"][0][:2]
    want = expected["transformer"][1]["target_ids"][:2]
    # A Python literal: newer saved_model_cli versions evaluate nothing else.
    ran = _saved_model_cli("run", "--dir", path, "--tag_set", "serve", "--signature_def",
                           "serving_default", "--input_exprs", "tokens=%s" % tokens.tolist())
    assert ran.returncode == 0, ran.stderr[-3000:]
    match = re.search(r"Result for output key target_ids:\n(\[\[.*?\]\])", ran.stdout, re.S)
    assert match, ran.stdout[-3000:]
    got = np.array([[int(v) for v in row.split()]
                    for row in re.findall(r"\[([\d ]+)\]", match.group(1))])
    np.testing.assert_array_equal(got, want)


def test_export_of_an_older_checkpoint_serves_that_checkpoint(runs, expected, tmp_path,
                                                             capsys):
    folder = runs / "classifier" / "checkpoints"
    out = tmp_path / "served" / "trigger" / "1"
    assert main(["export", str(folder / "ckpt-4.index"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ckpt-4" in printed and "probabilities (B, 4) float32" in printed
    old, task, _, checkpoint = load_run_model(str(folder / "ckpt-4"))
    assert os.path.basename(checkpoint) == "ckpt-4"
    tokens, newest = expected["classifier"]
    got = _serve(str(out), tokens)
    want = _reference(old, task, tokens)
    del want["attention"]  # exported without --attention
    _assert_same(got, want)
    assert not np.allclose(got["probabilities"], newest["probabilities"], atol=1e-5)
    with open(str(out / "assets" / "vocab.json"), encoding="utf-8") as f:
        assert json.load(f)["checkpoint"] == "ckpt-4"
    # --force replaces the export with the newest checkpoint's, the run named by name.
    code = main(["export", "classifier", str(out), "--force", "--runs-dir", str(runs)])
    assert code == 0
    np.testing.assert_allclose(_serve(str(out), tokens)["probabilities"],
                               newest["probabilities"], atol=1e-5)
    assert os.listdir(str(out.parent)) == ["1"]


def _export_fails(args, capsys, parent):
    before = sorted(os.listdir(str(parent)))
    assert main(["export"] + [str(a) for a in args]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(os.listdir(str(parent))) == before  # nothing made, nothing left
    return captured.err


def test_cli_refuses_what_it_cannot_export_with_exit_code_2(runs, tmp_path, capsys):
    parent = tmp_path / "models"
    parent.mkdir()
    out = parent / "m"
    err = _export_fails([tmp_path / "nope", out], capsys, parent)
    assert err.startswith("attnlab export: no run folder or checkpoint at ")
    assert str(tmp_path / "nope") in err
    (tmp_path / "plain").mkdir()
    err = _export_fails([tmp_path / "plain", out], capsys, parent)
    assert "is not a run folder: it has no config.yaml" in err
    config = validate_config(CONFIGS["classifier"])
    prepare_run(config, str(tmp_path / "runs"), "fresh")  # created, never trained
    err = _export_fails([tmp_path / "runs" / "fresh", out], capsys, parent)
    assert "has no checkpoint" in err and "fresh" in err
    err = _export_fails([runs / "transformer", out, "--max-length", "9"], capsys, parent)
    assert "max_length 9 exceeds the model's max_length 8" in err
    err = _export_fails([runs / "classifier", out, "--max-length", "4"], capsys, parent)
    assert "max_length applies to seq2seq models" in err
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    err = _export_fails([runs / "classifier", out], capsys, parent)
    assert "exists and is not empty" in err and "--force" in err
    assert (out / "keep.txt").read_text() == "precious"
    # A documents model (B, sentences, words) has no token-row signature: refused, named.
    han = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "configs", "documents_han.yaml"))
    han["task"].update(n_train=40, n_val=8, n_test=8)
    han_run = prepare_run(validate_config(han), str(tmp_path / "runs"), "han")
    os.makedirs(os.path.join(han_run.path, "checkpoints"), exist_ok=True)
    tf.train.Checkpoint(step=tf.Variable(1)).save(
        os.path.join(han_run.path, "checkpoints", "ckpt"))
    err = _export_fails([han_run.path, parent / "h"], capsys, parent)
    assert "model 'han' reads (B, sentences, words) documents" in err


def test_a_failed_export_leaves_nothing_behind(runs, tmp_path, monkeypatch):
    parent = tmp_path / "models"
    parent.mkdir()

    def broken_save(*args, **kwargs):
        os.makedirs(args[1])
        with open(os.path.join(args[1], "saved_model.pb"), "w") as f:
            f.write("half")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_run(str(runs / "classifier"), str(parent / "m"))
    assert os.listdir(str(parent)) == []


def test_output_names_follow_the_model(restored):
    model, task, _, _ = restored["rnn_seq2seq"]
    length = task.arrays("test")[1].shape[1]
    assert output_names(model, task, attention=True) == {
        "target_ids": "(B, %d) int32" % length,
        "cross_attention": "(B, 1, %d, T) float32" % length}
    assert output_names(model, task, max_length=3) == {"target_ids": "(B, 3) int32"}
