"""Smoke run of every benchmark script: tiny sizes, each in its own process.

Proves the scripts still run and print their tables; the times mean nothing here and are
never asserted (benchmarks are measured by hand, see benchmarks/RESULTS.md).
"""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")

# script -> (header columns of its tables, row labels that must appear, SUMMARY targets)
EXPECTED = {
    "mha_speed.py": (
        [["case", "attnlab", "tf.keras", "attnlab / keras", "attnlab of ceiling",
          "keras of ceiling", "step GFLOP", "ceiling GFLOP/s"]],
        ["L=16", "L=32", "L=16 XLA", "L=32 XLA"],
        ["1 MHA L=16", "1 MHA L=32", "1 MHA L=16 XLA", "1 MHA L=32 XLA"]),
    "chunked_memory.py": (
        [["case", "chunked", "full", "full / chunked", "one (B,H,L,L) fp32 tensor",
          "first step s (chunked / full)"],
         ["case", "chunked", "full", "chunked / full", "full, autodiff softmax",
          "chunked / autodiff full"],
         ["case", "chunked", "full", "chunked / full", "all processes (chunked; full)"],
         ["case", "chunked", "full", "full / chunked"]],
        ["L=256", "L=512", "L=128"],
        ["2 chunked memory L=256", "2 chunked memory L=512", "2 chunked time L=128"]),
    "capture_overhead.py": (
        [["case", "ms", "ratio to forward", "CPU ms", "CPU ratio to forward"]],
        ["forward", "forward + output_attentions", "capture_hf_attention"],
        ["HF capture vs forward (B=2 T=16, 2 layers)"]),
    "capture_qk_overhead.py": (
        [["case", "ms", "ratio to forward", "CPU ms", "CPU ratio to forward"]],
        ["forward", "capture_attention", "capture_attention + q/k"],
        ["capture with q/k vs forward (B=2 T=16, 2 blocks)"]),
    "local_scaling.py": (
        [["case", "local_attention", "ms per 1k positions", "time / first", "L / first"],
         ["case", "local_attention", "per-position loop", "speed-up"]],
        ["L=64", "L=128", "L=256", "L=32 w=4"],
        ["3 local linear in L (w=8)", "3 local vs loop L=32 w=4"]),
    "attention_flow.py": (
        [["case", "work L*T^4", "flow s", "flow us per work", "rollout ms"]],
        ["L=2 T=4", "L=2 T=8", "L=4 T=8"],
        ["attention flow at the largest size tried (L=4 T=8)"]),
    "integrated_gradients.py": (
        [["case", "ms", "ms per explanation", "ratio to forward"]],
        ["B=1 forward", "B=1 gradient x4", "B=1 integrated_gradients 4 steps", "B=2 forward",
         "B=2 integrated_gradients 4 steps"],
        ["IG 4 steps, 2 layers, T=16, B=1", "IG 4 steps, 2 layers, T=16, B=2"]),
    "line_view_update.py": (
        [["case", "lines drawn", "update ms", "goal ms", "ms / goal"]],
        ["16 tokens, first 16 shown, select token", "16 tokens, first 16 shown, toggle head",
         "24 tokens, all 24 shown, select token", "24 tokens, all 24 shown, toggle head"],
        ["line view update 16 tokens (first 16 shown)",
         "line view update 24 tokens (all 24 shown)"]),
    "moe_speed.py": (
        [["case", "step ms", "time / dense", "parameters", "parameters / dense"]],
        ["dense FFN", "MoE gather", "MoE buffer"],
        ["MoE gather top-1 E=8 step time vs dense", "MoE buffer top-1 E=8 step time vs dense",
         "MoE E=8 parameters vs dense"]),
}


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _run(args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def _check_output(out, headers, row_labels, targets):
    lines = out.splitlines()
    table_lines = [_cells(line) for line in lines if line.startswith("| ")]
    found_headers = [cells for cells in table_lines if cells[0] == "case"]
    assert found_headers == headers
    labels = [cells[0] for cells in table_lines if cells[0] != "case"]
    for label in row_labels:
        assert label in labels, (label, labels)
    for cells in table_lines:
        assert len(cells) in {len(h) for h in headers}, cells
    summaries = [_cells(line[len("SUMMARY"):]) for line in lines if line.startswith("SUMMARY |")]
    assert sorted(s[0] for s in summaries) == sorted(targets)
    for target, measured, goal, status in summaries:
        assert measured and goal and status in ("met", "NOT met"), (target, measured)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_benchmark_script_smoke(script):
    out = _run([os.path.join("benchmarks", script), "--smoke"])
    _check_output(out, *EXPECTED[script])


def _scripts():
    return sorted(name for name in os.listdir(BENCHMARKS)
                  if name.endswith(".py") and not name.startswith("_"))


@pytest.mark.slow
def test_run_all_smoke_runs_the_other_scripts_and_prints_the_summary():
    # The scripts checked above run once; run_all runs local_scaling (to check its summary
    # rows) and every other script (targets 4 and 5, the viz), each of which must succeed.
    others = [name for name in _scripts() if name not in EXPECTED]
    out = _run([os.path.join("benchmarks", "run_all"), "--smoke", "local_scaling.py"] + others)
    for name in ["local_scaling.py"] + others:
        assert "\n%s " % name in out, name  # run_all's header line for the script
    summary = out[out.index("## Summary"):]
    rows = [_cells(line) for line in summary.splitlines() if line.startswith("| ")]
    assert rows[0] == ["target", "measured", "goal", "status", "script s"]
    assert [row for row in rows if row[1].startswith("FAILED")] == []
    targets = [row[0] for row in rows[1:]]
    assert set(EXPECTED["local_scaling.py"][2]) <= set(targets)
    assert len(targets) >= 2 + len(others)


@pytest.mark.slow
def test_op_profile_smoke_tables_add_up():
    out = _run([os.path.join("benchmarks", "op_profile.py"), "--smoke"])
    tables = {}
    for line in out.splitlines():
        if line.startswith("### Target "):
            current = tables.setdefault(line.split(",")[0][len("### "):], [])
        elif line.startswith("| ") and not line.startswith("|---"):
            current.append(_cells(line))
    assert sorted(tables) == ["Target 1", "Target 2"]
    for title, sides in (("Target 1", ("attnlab", "keras")), ("Target 2", ("chunked", "full"))):
        header, *rows = tables[title]
        a, b = sides
        assert header == ["op", a, b, "%s - %s" % (a, b), "%s ops" % a, "%s ops" % b]
        by_op = {row[0]: row for row in rows}
        ops = [row for row in rows if row[0] not in ("all ops", "step, wall (profiled)")]
        for column in (1, 2):
            listed = sum(float(row[column]) for row in ops)
            total = float(by_op["all ops"][column])
            wall = float(by_op["step, wall (profiled)"][column])
            # Rows are rounded to 0.01 ms; ops run one at a time (one inter-op thread), so
            # their sum cannot exceed the step's wall time.
            assert abs(listed - total) <= 0.006 * len(ops) + 1e-9, (title, column)
            assert 0 < total <= wall * 1.1, (title, column, total, wall)
            # Both sides multiply matrices: some matmul-like op type took time.
            assert any(re.search("MatMul|Einsum", row[0]) and float(row[column]) > 0
                       for row in ops), (title, column)
        for row in ops:
            assert float(row[3]) == pytest.approx(float(row[1]) - float(row[2]), abs=0.011)
    # The chunked step runs its loop bodies once per block: many more ops than full.
    chunked_ops = {row[0]: row for row in tables["Target 2"][1:]}["all ops"]
    assert float(chunked_ops[4]) > 2 * float(chunked_ops[5])
