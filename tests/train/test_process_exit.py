"""Process exit after a multi-worker run: flushed output, the exit status kept, no teardown."""
import os
import subprocess
import sys
import textwrap

import pytest

from attnlab.train import process_exit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(body, marked=True):
    """Run `body` (defining main) in a fresh interpreter through run_and_exit."""
    script = textwrap.dedent("""
        import atexit, sys
        from attnlab.train import process_exit
        atexit.register(lambda: print("interpreter teardown ran"))
        if %r:
            process_exit.mark_collective_runtime_started()
    """ % marked) + textwrap.dedent(body) + "\nprocess_exit.run_and_exit(main)\n"
    # Output goes to pipes, so Python buffers it: only a flush before os._exit keeps it.
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PYTHONUNBUFFERED", None)
    return subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=60)


def test_without_a_collective_runtime_it_is_sys_exit(monkeypatch):
    monkeypatch.setattr(process_exit, "_collective_runtime_started", False)
    with pytest.raises(SystemExit) as stop:
        process_exit.exit_process(3)
    assert stop.value.code == 3
    with pytest.raises(KeyError):  # errors propagate untouched
        process_exit.run_and_exit(lambda: {}["missing"])


def test_unmarked_process_exits_normally():
    done = _run("""
        def main():
            print("result written")
            return 4
    """, marked=False)
    assert done.returncode == 4
    assert done.stdout.splitlines() == ["result written", "interpreter teardown ran"]


def test_after_a_multi_worker_run_the_exit_skips_teardown_and_keeps_output_and_status():
    done = _run("""
        def main():
            print("result written")
            print("warning", file=sys.stderr)
            return 3
    """)
    assert done.returncode == 3
    assert done.stdout.splitlines() == ["result written"]  # no teardown
    assert done.stderr.splitlines() == ["warning"]


@pytest.mark.parametrize("body, code, err", [
    ("def main():\n    return None\n", 0, ""),
    ("def main():\n    sys.exit(5)\n", 5, ""),
    ("def main():\n    sys.exit('bad config')\n", 1, "bad config"),
    ("def main():\n    raise ValueError('broken model')\n", 1, "ValueError: broken model"),
])
def test_after_a_multi_worker_run_exit_codes_follow_sys_exit(body, code, err):
    done = _run(body)
    assert done.returncode == code, done.stderr
    assert "interpreter teardown ran" not in done.stdout
    assert err in done.stderr
    if code == 1 and "raise" in body:
        assert "Traceback (most recent call last)" in done.stderr
