"""The models folder: finding weights offline, loading them, and the error when they are absent."""
import os

import numpy as np
import pytest

from attnlab.models.hf_tiny import tiny_hf_model
from attnlab.viz.pretrained import ENV, find_pretrained, load_pretrained, models_dir


def test_models_dir_is_the_environment_variable_or_models_next_to_the_package(monkeypatch,
                                                                                 tmp_path):
    monkeypatch.setenv(ENV, str(tmp_path))
    assert models_dir() == str(tmp_path)
    monkeypatch.delenv(ENV)
    import attnlab

    root = os.path.dirname(os.path.dirname(os.path.abspath(attnlab.__file__)))
    assert models_dir() == os.path.join(root, "models")


def test_missing_weights_raise_file_not_found_naming_the_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HOME", raising=False)
    assert find_pretrained("bert-base-uncased", tmp_path) is None
    with pytest.raises(FileNotFoundError) as error:
        load_pretrained("bert-base-uncased", folder=tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "never downloads" in message
    assert os.path.join(str(tmp_path), "bert-base-uncased") in message


def test_a_save_pretrained_folder_loads_back_to_the_same_model(tmp_path):
    model, tokenizer = tiny_hf_model("distilbert", seed=3)
    model.save_pretrained(str(tmp_path / "tiny-distilbert"))
    tokenizer.save_pretrained(str(tmp_path / "tiny-distilbert"))
    assert find_pretrained("tiny-distilbert", tmp_path) == str(tmp_path / "tiny-distilbert")
    loaded, loaded_tokenizer = load_pretrained("tiny-distilbert", folder=tmp_path)
    batch = tokenizer(["the cat sat"], return_tensors="tf")
    assert loaded_tokenizer(["the cat sat"])["input_ids"] == batch["input_ids"].numpy().tolist()
    np.testing.assert_allclose(loaded(batch).last_hidden_state.numpy(),
                               model(batch).last_hidden_state.numpy(), atol=1e-6)


def test_the_hugging_face_cache_layout_is_found_by_hub_id(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HOME", raising=False)
    repo = tmp_path / "huggingface" / "hub" / "models--org--tiny-bert"
    snapshot = repo / "snapshots" / "0123abc"
    model, tokenizer = tiny_hf_model("bert")
    model.save_pretrained(str(snapshot))
    tokenizer.save_pretrained(str(snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc\n")
    assert find_pretrained("org/tiny-bert", tmp_path) == str(snapshot)
    loaded, _ = load_pretrained("org/tiny-bert", model_class="TFBertModel", folder=tmp_path)
    assert type(loaded).__name__ == "TFBertModel"
    # HF_HOME (set by the container) names the cache instead.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    assert find_pretrained("org/tiny-bert", tmp_path) is None


def test_bad_names_get_clear_errors(tmp_path):
    model, tokenizer = tiny_hf_model("bert")
    model.save_pretrained(str(tmp_path / "m"))
    tokenizer.save_pretrained(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="model name"):
        find_pretrained("", tmp_path)
    with pytest.raises(ValueError, match="transformers has no class 'TFNoSuchModel'"):
        load_pretrained("m", model_class="TFNoSuchModel", folder=tmp_path)


def test_attnlab_viz_imports_without_transformers_and_says_what_is_missing(tmp_path,
                                                                            monkeypatch):
    import subprocess
    import sys

    code = ("import sys; sys.modules['transformers'] = None; import attnlab.viz; "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="needs the `transformers` package"):
        load_pretrained("m", folder=tmp_path)
