"""Ending a process that has run a multi-worker tf.distribute strategy.

The collective runtime that MultiWorkerMirroredStrategy starts leaves threads running when
the interpreter shuts down, and in about one process in ten the teardown then aborts with
"terminate called without an active exception" (SIGABRT, exit status 134), after all the
work is done and saved: tensorflow/tensorflow#50853, #55250, #56684 (TF 2.5-2.10). A
finished training would report failure. Such a process therefore ends with os._exit once
its output is flushed, which skips that teardown; any other process exits normally.
"""
import logging
import os
import sys
import traceback

_collective_runtime_started = False


def mark_collective_runtime_started():
    """Called when this process joins a multi-worker cluster."""
    global _collective_runtime_started
    _collective_runtime_started = True


def exit_process(code=0):
    """Exit with `code` as sys.exit does; without teardown after a multi-worker run."""
    if not _collective_runtime_started:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)  # sys.exit("message") semantics
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass  # closed or replaced stream: nothing left to lose
    os._exit(code)


def run_and_exit(main):
    """Run `main()` as a process's entry point and exit with what it returns."""
    try:
        code = main()
    except SystemExit as stop:
        code = stop.code
    except BaseException:
        if not _collective_runtime_started:
            raise
        traceback.print_exc()
        code = 1
    exit_process(code)
