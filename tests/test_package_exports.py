"""The lazily loaded exports of attnlab.train and attnlab.viz are listed by dir() (tab
completion in JupyterLab offers them) and load on first use."""
import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module, expected", [
    ("attnlab.train", {"Trainer", "RunDir", "load_config"}),
    ("attnlab.viz", {"AttentionExplorer", "capture_attention", "plot_attention",
                     "TokenLineView", "QueryKeyAnatomy", "HeadMetricsTable", "head_metrics",
                     "compare_attention", "integrated_gradients", "attention_flow",
                     "gradient_weighted_relevance", "capture_attention_gradients"}),
])
def test_dir_lists_every_export_and_each_loads(module, expected):
    package = importlib.import_module(module)
    listed = dir(package)
    assert expected <= set(listed)
    assert set(package.__all__) <= set(listed)
    assert listed == sorted(listed)
    for name in package.__all__:
        assert getattr(package, name) is not None


def test_listing_attnlab_train_does_not_import_tensorflow():
    """`attnlab runs|logs|stop` start without TensorFlow; dir() keeps it that way."""
    code = ("import sys, attnlab.train as t; names = dir(t); "
            "assert 'Trainer' in names; print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_importing_attnlab_viz_does_not_import_tensorflow():
    """Plotting a saved run, its metrics and comparisons needs neither TensorFlow nor widgets."""
    code = ("import sys, attnlab.viz as v; names = dir(v); "
            "print('tensorflow' in sys.modules, 'ipywidgets' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False False"


def test_every_viz_export_is_the_object_not_a_same_named_module():
    # Importing a submodule sets the package attribute of its name to the module: the
    # exports named like their modules must stay the functions afterwards.
    code = ("import types, attnlab.viz as v, attnlab.viz.integrated_gradients, "
            "attnlab.viz.attention_flow, attnlab.viz.head_metrics, "
            "attnlab.viz.compare_attention, attnlab.viz.anatomy; "
            "print([n for n in v.__all__ if isinstance(getattr(v, n), types.ModuleType)])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
