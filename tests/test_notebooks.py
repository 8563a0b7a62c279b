"""The shipped notebooks: committed stripped, with a parameters cell, and runnable in QUICK mode.

All notebooks run in one `scripts/run-notebooks --quick` subprocess (one kernel start per
notebook); under pytest-xdist the first worker runs it and the others read its summary.
"""
import ast
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "scripts" / "run-notebooks"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell):
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def names(code, context):
    """Names stored (ast.Store) or read (ast.Load) in `code`."""
    return {node.id for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Name) and isinstance(node.ctx, context)}


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebook in %s" % (ROOT / "notebooks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_without_outputs(path):
    dirty = [i for i, cell in enumerate(load(path)["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert dirty == [], "%s has outputs or execution counts in code cells %s" % (path.name,
                                                                                  dirty)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_one_parameters_cell_defining_quick(path):
    cells = load(path)["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "%s: %d cells tagged 'parameters', expected 1" % (path.name,
                                                                               len(tagged))
    assert tagged[0]["cell_type"] == "code"
    code = source(tagged[0])
    assert "QUICK" in names(code, ast.Store), \
        "%s: the parameters cell does not assign QUICK" % path.name
    # The runner injects QUICK = True *after* this cell, so sizes computed here from QUICK
    # would keep their full-run values: they belong in a later cell.
    assert "QUICK" not in names(code, ast.Load), \
        "%s: the parameters cell reads QUICK; derive quick sizes in a later cell" % path.name


def test_check_stripped_flags_a_notebook_with_outputs(tmp_path):
    nb = {"cells": [{"cell_type": "code", "execution_count": 3, "metadata": {},
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}],
                     "source": "print(1)"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "dirty.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    result = subprocess.run([sys.executable, str(RUNNER), "--check-stripped", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "dirty.ipynb" in result.stdout and "cells 0" in result.stdout


def test_run_notebooks_reports_the_failing_cell(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "execution_count": None, "metadata": {"tags": ["parameters"]},
         "outputs": [], "source": "QUICK = False"},
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
         "source": "assert QUICK is True\nraise RuntimeError('boom in cell two')"}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "fails.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(RUNNER), "--quick", "--output-dir", str(out),
                             str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    # The injected QUICK = True ran (the assert passed), then the error was reported.
    assert "RuntimeError" in result.stdout and "boom in cell two" in result.stdout
    assert "FAILED" in result.stdout
    executed = load(out / "fails.ipynb")
    assert executed["cells"][1]["metadata"]["tags"] == ["injected-parameters"]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """Summary of one `run-notebooks --quick` over every notebook, shared by xdist workers."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder all workers of this session share
    summary = shared / "notebooks-quick.json"
    with open(str(shared / "notebooks-quick.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not summary.exists():
            env = dict(os.environ, PYTHONHASHSEED="0")
            result = subprocess.run(
                [sys.executable, str(RUNNER), "--quick", "--output-dir",
                 str(shared / "executed"), "--summary-json", str(summary)]
                + [str(p) for p in NOTEBOOKS],
                capture_output=True, text=True, env=env, timeout=3600)
            if not summary.exists():
                pytest.fail("run-notebooks wrote no summary:\n%s\n%s"
                            % (result.stdout[-6000:], result.stderr[-6000:]))
    return {r["notebook"]: r for r in json.loads(summary.read_text())["results"]}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes_in_quick_mode(path, quick_run):
    result = quick_run[path.name]
    assert result["status"] == "ok", "%s failed:\n%s" % (path.name, result["error"])
