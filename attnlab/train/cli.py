"""The `attnlab` command: train in the foreground or detached, list runs, follow logs, stop.

    attnlab train CONFIG.yaml [--name NAME] [--detach] [--resume] [--runs-dir DIR]
    attnlab runs [--runs-dir DIR]
    attnlab logs NAME [-f] [--runs-dir DIR]
    attnlab stop NAME [--runs-dir DIR] [--timeout SECONDS]

The runs folder is ./runs unless --runs-dir or $ATTNLAB_RUNS_DIR says otherwise.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

from attnlab.train.config import ConfigError, load_config
from attnlab.train.process_exit import run_and_exit
from attnlab.train.run_dir import read_status


def _runs_dir(args):
    return os.path.abspath(args.runs_dir or os.environ.get("ATTNLAB_RUNS_DIR") or "runs")


def _pid_alive(pid):
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _state(status):
    """The status' state; a "running" run whose process is gone is reported as "died"."""
    state = status.get("state", "?")
    if state == "running" and not _pid_alive(status.get("pid")):
        return "died"
    return state


def cmd_train(args):
    from attnlab.train.runner import RunExistsError, prepare_run, run_training

    runs_dir = _runs_dir(args)
    name = args.name or os.path.splitext(os.path.basename(args.config))[0]
    if args.resume:
        path = os.path.join(runs_dir, name)
        config = load_config(os.path.join(path, "config.yaml")) if os.path.exists(
            os.path.join(path, "config.yaml")) else load_config(args.config)
        status = read_status(path) or {}
        if _state(status) == "running" and status.get("pid") != os.getpid():
            print("run %r is still running (pid %s)" % (name, status.get("pid")),
                  file=sys.stderr)
            return 1
    else:
        config = load_config(args.config)  # fails here, before anything is created
    try:
        run = prepare_run(config, runs_dir, name, resume=args.resume)
    except (RunExistsError, FileNotFoundError) as err:
        print("attnlab train: %s" % err, file=sys.stderr)
        return 1
    if args.detach:
        command = [sys.executable, "-m", "attnlab", "train", args.config, "--name", name,
                   "--runs-dir", runs_dir, "--resume"]
        with open(run.file("output.log"), "ab") as out:
            # Own session: the run survives the terminal / SSH connection closing (setsid
            # and nohup semantics); no stdin, output into the run folder.
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=dict(os.environ, ATTNLAB_DETACHED="1"))
        run.write_status("running", pid=proc.pid)
        print("started run %s (pid %d) in %s" % (name, proc.pid, run.path))
        print("follow it:  attnlab logs %s -f" % name)
        print("stop it:    attnlab stop %s" % name)
        return 0
    run.write_status("running", pid=os.getpid())
    verbose = 0 if os.environ.get("ATTNLAB_DETACHED") else None
    try:
        metrics = run_training(config, run, verbose=verbose)
    except BaseException as err:
        # Failures inside the training loop are recorded by the Trainer; this catches the
        # ones before and after it (building the task or model, final evaluation).
        if (run.read_status() or {}).get("state") != "failed":
            message = "%s: %s" % (type(err).__name__, err)
            run.log("run failed: " + message)
            run.write_status("failed", error=message)
        raise
    if metrics is None:
        print("run %s stopped; resume with: attnlab train %s --name %s --resume"
              % (name, args.config, name))
    else:
        print("run %s finished: %s" % (name, ", ".join(
            "%s=%.4g" % (k, v) for k, v in metrics.items() if isinstance(v, (int, float)))))
    return 0


def cmd_runs(args):
    runs_dir = _runs_dir(args)
    names = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    rows = []
    for name in names:
        status = read_status(os.path.join(runs_dir, name))
        if status is None:
            continue
        metrics = status.get("metrics") or {}
        shown = " ".join("%s=%.4g" % (k, v) for k, v in metrics.items()
                         if isinstance(v, (int, float)) and k != "learning_rate")
        rows.append((name, _state(status), str(status.get("epoch", "")),
                     str(status.get("step", "")), shown or (status.get("error") or "")))
    if not rows:
        print("no runs in %s" % runs_dir)
        return 0
    header = ("NAME", "STATE", "EPOCH", "STEP", "LATEST METRICS")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    for row in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    return 0


def cmd_logs(args):
    path = os.path.join(_runs_dir(args), args.name)
    log = os.path.join(path, "train.log")
    if not os.path.isdir(path):
        print("attnlab logs: no run named %r in %s" % (args.name, _runs_dir(args)),
              file=sys.stderr)
        return 1
    position = 0
    while True:
        if os.path.exists(log):
            with open(log, encoding="utf-8") as f:
                f.seek(position)
                chunk = f.read()
                position = f.tell()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        if not args.follow:
            return 0
        status = read_status(path) or {}
        if _state(status) in ("finished", "failed", "stopped", "died") and \
                os.path.exists(log) and os.path.getsize(log) == position:
            print("[run %s: %s]" % (args.name, _state(status)))
            return 0
        time.sleep(0.5)


def cmd_stop(args):
    path = os.path.join(_runs_dir(args), args.name)
    status = read_status(path)
    if status is None:
        print("attnlab stop: no run named %r" % args.name, file=sys.stderr)
        return 1
    pid = status.get("pid")
    if _state(status) != "running":
        print("run %s is not running (%s)" % (args.name, _state(status)))
        return 0
    # SIGTERM: the trainer finishes its step, checkpoints and exits.
    os.kill(int(pid), signal.SIGTERM)
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        if not _pid_alive(pid) or (read_status(path) or {}).get("state") != "running":
            print("run %s stopped (checkpoint saved); resume with --resume" % args.name)
            return 0
        time.sleep(0.2)
    print("run %s did not stop within %ss" % (args.name, args.timeout), file=sys.stderr)
    return 1


def parser():
    p = argparse.ArgumentParser(prog="attnlab", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a config into runs/NAME")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("--name", help="run name (default: the config's file name)")
    t.add_argument("--detach", action="store_true",
                   help="run in the background in its own session (survives logout)")
    t.add_argument("--resume", action="store_true",
                   help="continue an existing run from its latest checkpoint")
    for name, help_text in (("runs", "list runs with state, epoch and latest metrics"),
                            ("logs", "print a run's train.log"),
                            ("stop", "stop a run cleanly (checkpoint first)")):
        s = sub.add_parser(name, help=help_text)
        if name != "runs":
            s.add_argument("name")
        if name == "logs":
            s.add_argument("-f", "--follow", action="store_true", help="follow the log")
        if name == "stop":
            s.add_argument("--timeout", type=float, default=60.0)
    for s in [t] + [sub.choices[n] for n in ("runs", "logs", "stop")]:
        s.add_argument("--runs-dir", help="runs folder (default ./runs or $ATTNLAB_RUNS_DIR)")
    return p


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parser().parse_args(argv)
    commands = {"train": cmd_train, "runs": cmd_runs, "logs": cmd_logs, "stop": cmd_stop}
    try:
        return commands[args.command](args)
    except ConfigError as err:
        print("attnlab: bad config: %s" % err, file=sys.stderr)
        return 2


def entry_point():
    """The `attnlab` console script and `python -m attnlab`."""
    run_and_exit(main)


if __name__ == "__main__":
    entry_point()
