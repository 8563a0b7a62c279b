"""The README's example must keep working: run it and train the model it builds for a step."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_model_example_builds_and_trains():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    model = namespace["model"]
    ids = np.random.RandomState(0).randint(1, 1000, size=(4, 40))
    ids[:, 30:] = 0
    logits = model(ids)
    assert logits.shape == (4, 2)
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(ids, np.array([0, 1, 0, 1]), verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_readme_keras_conversion_example_copies_the_weights():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    example = [b for b in blocks if "from_keras" in b]
    assert example, "README.md has no from_keras example"
    namespace = {}
    exec(compile(example[0], "README.md", "exec"), namespace)  # noqa: S102
    keras_weights = namespace["keras_mha"].get_weights()
    for layer in (namespace["ours"], namespace["back"]):
        assert len(layer.get_weights()) == len(keras_weights) == 8
        for got, want in zip(layer.get_weights(), keras_weights):
            np.testing.assert_array_equal(got, want)


def test_readme_look_inside_example_runs_on_the_readme_model():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    example = [b for b in blocks if "TokenLineView" in b]
    assert example, "README.md has no TokenLineView example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102  (the model)

    class Vocabulary:
        tokens = ["<pad>"] + ["w%d" % i for i in range(1, 1000)]

    ids = np.random.RandomState(0).randint(1, 1000, size=(2, 12))
    ids[:, 9:] = 0
    namespace.update(ids=ids, vocab=Vocabulary())
    exec(compile(example[0], "README.md", "exec"), namespace)  # noqa: S102
    weights = namespace["captured"].weights
    assert weights and all(w.shape[0] == 2 for w in weights.values())
    assert namespace["relevance"].shape == (2, 12, 12)
    assert namespace["ig"].attributions.shape == (2, 12)
