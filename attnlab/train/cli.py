"""The `attnlab` command: train (foreground or detached), list runs, follow logs, stop, export.

    attnlab train CONFIG.yaml [--name NAME] [--detach] [--resume] [--runs-dir DIR]
    attnlab launch CONFIG.yaml --workers HOST:PORT,... --index I [--name NAME] [--runs-dir DIR]
    attnlab kubernetes CONFIG.yaml --workers N --image IMAGE [--name NAME] [--port PORT]
    attnlab runs [--runs-dir DIR]
    attnlab logs NAME [-f] [--runs-dir DIR]
    attnlab stop NAME [--runs-dir DIR] [--timeout SECONDS]
    attnlab export RUN_OR_CHECKPOINT OUT [--attention] [--max-length N] [--force]
    attnlab doctor [--checkout DIR]

The runs folder is ./runs unless --runs-dir or $ATTNLAB_RUNS_DIR says otherwise.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time

from attnlab.train.config import ConfigError, load_config
from attnlab.train.process_exit import run_and_exit
from attnlab.train.run_dir import load_status, read_status

# A run name is one folder under the runs folder: no separators, no "..", no hidden files.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UsageError(Exception):
    """A bad argument on the command line: main prints it as one line, exit status 2."""


def _runs_dir(args):
    path = os.path.abspath(args.runs_dir or os.environ.get("ATTNLAB_RUNS_DIR") or "runs")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError("runs folder %s is a file, expected a folder (--runs-dir or "
                         "$ATTNLAB_RUNS_DIR)" % path)
    return path


def _run_name(name):
    """`name` when it is a valid run name (one folder under the runs folder)."""
    if not NAME.match(name):
        raise UsageError("bad run name %r: use letters, digits, '.', '_' and '-', starting "
                         "with a letter or digit (at most 128 characters)" % name)
    return name


def _default_name(args):
    return _run_name(args.name if args.name is not None
                     else os.path.splitext(os.path.basename(args.config))[0])


def _valid_pid(pid):
    # 0 and negative pids address process groups in os.kill: never take them from a file.
    return isinstance(pid, int) and not isinstance(pid, bool) and pid > 0


def _pid_alive(pid):
    if not _valid_pid(pid):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _local(status):
    """Whether the run's process is on this machine (multi-worker runs record their host)."""
    return status.get("host") in (None, socket.gethostname())


def _state(status):
    """The status' state; a "running" run whose process is gone is reported as "died".

    The process of a run started on another host or container cannot be checked from here:
    it is reported as its status says.
    """
    state = status.get("state", "?")
    if state == "running" and _local(status) and not _pid_alive(status.get("pid")):
        return "died"
    return state


def cmd_train(args):
    from attnlab.train.checkpoints import CheckpointRestoreError
    from attnlab.train.runner import RunExistsError, check_buildable, prepare_run, run_training

    runs_dir = _runs_dir(args)
    name = _default_name(args)
    if args.resume:
        path = os.path.join(runs_dir, name)
        if not os.path.isdir(path):
            # Before the config is built: nothing to resume is the whole answer.
            print("attnlab train: cannot resume run %r: no run folder %s" % (name, path),
                  file=sys.stderr)
            return 1
        config = load_config(os.path.join(path, "config.yaml")) if os.path.exists(
            os.path.join(path, "config.yaml")) else load_config(args.config)
        status = read_status(path) or {}
        if _state(status) == "running" and status.get("pid") != os.getpid():
            print("run %r is still running (pid %s)" % (name, status.get("pid")),
                  file=sys.stderr)
            return 1
    else:
        config = load_config(args.config)  # fails here, before anything is created
    # Task and model are built once before the run folder exists: a config they refuse
    # leaves nothing behind (a multi-worker strategy must start TensorFlow itself first).
    task = check_buildable(config, model=config["train"]["distribute"] != "multi_worker")
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
        metrics = run_training(config, run, verbose=verbose, task=task)
    except CheckpointRestoreError as err:
        # Damaged files, not a bug: a message without traceback (the run log has details).
        print("attnlab train: run %s: %s" % (name, err), file=sys.stderr)
        return 1
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


def cmd_launch(args):
    from attnlab.train import launch

    runs_dir = _runs_dir(args)  # local arguments first: a bad one never opens a port
    try:
        workers = launch.parse_workers(args.workers)
        index = launch.resolve_index(args.index, workers)
        launch.check_port_free(workers[index][1], "%s:%d" % workers[index])
    except launch.LaunchError as err:
        print("attnlab launch: %s" % err, file=sys.stderr)
        return 2
    from attnlab.train.run_dir import RunDir
    from attnlab.train.runner import check_buildable, prepare_run, run_training

    name = _default_name(args)
    path = os.path.join(runs_dir, name)
    chief = index == 0
    # Relaunching the same command resumes: the chief reuses the run's resolved config.
    exists = os.path.exists(os.path.join(path, "config.yaml"))
    config = load_config(os.path.join(path, "config.yaml") if exists and chief else args.config)
    config["train"]["distribute"] = "multi_worker"
    if args.collective_timeout is not None:
        config["train"]["collective_timeout"] = args.collective_timeout or None
    os.environ["TF_CONFIG"] = launch.tf_config(workers, index)
    # The task's arguments are checked before the run folder exists; the model is not built
    # here: TensorFlow may not start before the multi-worker strategy.
    check_buildable(config, model=False)
    scratch = None
    if chief:
        status = read_status(path) or {}
        if exists and _state(status) == "running" and _local(status) and \
                _pid_alive(status.get("pid")) and status.get("pid") != os.getpid():
            print("attnlab launch: run %r is still running (pid %s)" % (name, status.get("pid")),
                  file=sys.stderr)
            return 1
        run = prepare_run(config, runs_dir, name, resume=exists)
        run.write_status("running", pid=os.getpid(), host=socket.gethostname(),
                         workers=["%s:%d" % w for w in workers], error=None)
        run.log("worker 0 of %d (chief) on %s: %s" % (len(workers), socket.gethostname(),
                                                       os.environ["TF_CONFIG"]))
        restore_from = None
    else:
        scratch = launch.scratch_dir(index, args.scratch_dir)
        run = RunDir(scratch)
        restore_from = os.path.join(path, "checkpoints")
    print("attnlab launch: worker %d of %d (%s), run %s" % (
        index, len(workers), "chief" if chief else "scratch " + scratch, name), flush=True)
    try:
        metrics = run_training(config, run, restore_from=restore_from,
                               verbose=0 if not chief else None)
    except BaseException as err:
        if chief and (run.read_status() or {}).get("state") != "failed":
            message = "%s: %s" % (type(err).__name__, err)
            run.log("run failed: " + message)
            run.write_status("failed", error=message)
        from attnlab.train.checkpoints import CheckpointRestoreError
        from attnlab.train.trainer import WorkerLostError

        if isinstance(err, WorkerLostError):
            print("attnlab launch: worker %d: %s" % (index, err), file=sys.stderr)
            return 3
        if isinstance(err, CheckpointRestoreError):  # damaged files: no traceback
            print("attnlab launch: worker %d: run %s: %s" % (index, name, err), file=sys.stderr)
            return 1
        raise
    finally:
        if scratch:
            launch.remove_scratch(scratch)
    if metrics is None:
        print("worker %d: run %s stopped; relaunch the same command to resume" % (index, name))
    elif chief:
        print("run %s finished: %s" % (name, ", ".join(
            "%s=%.4g" % (k, v) for k, v in metrics.items() if isinstance(v, (int, float)))))
    else:
        print("worker %d: run %s finished" % (index, name))
    return 0


def cmd_kubernetes(args):
    from attnlab.train.kubernetes import render_manifests

    try:
        text = render_manifests(args.config, workers=args.workers, image=args.image,
                                name=args.name, port=args.port, runs_claim=args.runs_claim,
                                namespace=args.namespace)
    except ValueError as err:
        print("attnlab kubernetes: %s" % err, file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def cmd_runs(args):
    runs_dir = _runs_dir(args)
    names = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    rows = []
    for name in names:
        status, problem = load_status(os.path.join(runs_dir, name))
        if problem:
            # One damaged run must not hide the others: list it with what is wrong.
            rows.append((name, "damaged", "", "", problem))
            continue
        if status is None:
            continue
        metrics = status.get("metrics")
        metrics = metrics if isinstance(metrics, dict) else {}
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
    path = os.path.join(_runs_dir(args), _run_name(args.name))
    log = os.path.join(path, "train.log")
    if not os.path.isdir(path):
        print("attnlab logs: no run named %r in %s" % (args.name, _runs_dir(args)),
              file=sys.stderr)
        return 1
    position = 0
    while True:
        if os.path.exists(log):
            with open(log, encoding="utf-8", errors="replace") as f:
                f.seek(position)
                chunk = f.read()
                position = f.tell()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        if not args.follow:
            return 0
        status, problem = load_status(path)
        if problem:
            # A damaged status never reaches a final state: following would never end.
            print("attnlab logs: run %r: %s; not following" % (args.name, problem),
                  file=sys.stderr)
            return 1
        status = status or {}
        if _state(status) in ("finished", "failed", "stopped", "died") and \
                os.path.exists(log) and os.path.getsize(log) == position:
            print("[run %s: %s]" % (args.name, _state(status)))
            return 0
        time.sleep(0.5)


def cmd_stop(args):
    if not (args.timeout >= 0 and args.timeout != float("inf")):  # NaN fails too
        raise UsageError("--timeout: expected a number of seconds >= 0, got %r" % args.timeout)
    path = os.path.join(_runs_dir(args), _run_name(args.name))
    status, problem = load_status(path)
    if problem:
        print("attnlab stop: run %r: %s" % (args.name, problem), file=sys.stderr)
        return 1
    if status is None:
        print("attnlab stop: no run named %r" % args.name, file=sys.stderr)
        return 1
    pid = status.get("pid")
    if status.get("state") == "running" and not _valid_pid(pid):
        print("attnlab stop: run %r: status.json has no valid pid (%r)" % (args.name, pid),
              file=sys.stderr)
        return 1
    if _state(status) != "running":
        print("run %s is not running (%s)" % (args.name, _state(status)))
        return 0
    if not _local(status):
        print("attnlab stop: run %s runs on host %s (pid %s); run `attnlab stop %s` there, or "
              "stop its containers (they get SIGTERM and checkpoint)"
              % (args.name, status.get("host"), pid, args.name), file=sys.stderr)
        return 1
    # SIGTERM: the trainer finishes its step, checkpoints and exits (on a multi-worker run
    # every worker stops after the same step).
    os.kill(int(pid), signal.SIGTERM)
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        if not _pid_alive(pid) or (read_status(path) or {}).get("state") != "running":
            print("run %s stopped (checkpoint saved); resume with --resume" % args.name)
            return 0
        time.sleep(0.2)
    print("run %s did not stop within %ss" % (args.name, args.timeout), file=sys.stderr)
    return 1


def cmd_export(args):
    from attnlab.train.export import ExportError, export_run

    source = args.source
    if not os.path.exists(source) and not os.path.exists(source + ".index") and \
            os.sep not in source and os.path.isdir(os.path.join(_runs_dir(args), source)):
        source = os.path.join(_runs_dir(args), source)  # a run name, as `attnlab logs` takes
    try:
        result = export_run(source, args.out, attention=args.attention,
                            max_length=args.max_length, force=args.force)
    except ExportError as err:
        print("attnlab export: %s" % err, file=sys.stderr)
        return 2
    print("exported %s to %s" % (result["checkpoint"], result["path"]))
    print("signature serving_default: tokens int32 (B, T) -> %s" % ", ".join(
        "%s %s" % item for item in result["outputs"].items()))
    print("vocabularies: %s" % os.path.join(result["path"], "assets", "vocab.json"))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block is behind --help, not in every error."""

    def error(self, message):
        self.exit(2, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


def parser():
    p = _Parser(prog="attnlab", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a config into runs/NAME")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("--name", help="run name (default: the config's file name)")
    t.add_argument("--detach", action="store_true",
                   help="run in the background in its own session (survives logout)")
    t.add_argument("--resume", action="store_true",
                   help="continue an existing run from its latest checkpoint")
    la = sub.add_parser("launch", help="start this machine's worker of a multi-worker run")
    la.add_argument("config", help="YAML config (the same file on every worker)")
    la.add_argument("--workers", required=True,
                    help="HOST:PORT of every worker, comma-separated, worker 0 (chief) first")
    la.add_argument("--index", help="this worker's position in --workers (default "
                                    "$ATTNLAB_WORKER_INDEX)")
    la.add_argument("--name", help="run name (default: the config's file name)")
    la.add_argument("--collective-timeout", type=float, default=None,
                    help="seconds a collective op waits for the other workers before "
                         "failing (0: no timeout; default: the config's "
                         "train.collective_timeout, none)")
    la.add_argument("--scratch-dir", help="where non-chief workers put their temporary files")
    k = sub.add_parser("kubernetes", help="print Kubernetes manifests (Indexed Job + headless "
                                          "Service) for a multi-worker run")
    k.add_argument("config", help="YAML config path inside the image (e.g. configs/x.yaml)")
    k.add_argument("--workers", type=int, required=True, help="number of workers (pods)")
    k.add_argument("--image", required=True, help="the attnlab image the pods run")
    k.add_argument("--name", help="run and Job name (default: from the config's file name)")
    k.add_argument("--port", type=int, default=23456, help="worker port (default 23456)")
    k.add_argument("--runs-claim", help="PersistentVolumeClaim mounted as the runs folder "
                                        "(ReadWriteMany: lets every pod resume)")
    k.add_argument("--namespace", help="namespace of the objects")
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
    e = sub.add_parser("export", help="write a run's model as a TensorFlow SavedModel for "
                                      "serving (signature serving_default)")
    e.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                   help="run folder or name (its newest checkpoint), or a checkpoint of it "
                        "(runs/NAME/checkpoints/ckpt-N)")
    e.add_argument("out", metavar="OUT", help="SavedModel folder to create (for TensorFlow "
                                              "Serving: MODELS/NAME/1)")
    e.add_argument("--attention", action="store_true",
                   help="also output the attention weights")
    e.add_argument("--max-length", type=int, default=None,
                   help="seq2seq: target ids to generate (default: the task's target length)")
    e.add_argument("--force", action="store_true", help="replace OUT if it exists")
    d = sub.add_parser("doctor", help="check GPU, TensorFlow, mounts, token, SSH keys, ports "
                                      "and the build's CA; print the fixes")
    d.add_argument("--checkout", help="the checkout (outside the container; default: the "
                                      "folder with docker-compose.yml at or above this one)")
    for s in [t, la, e] + [sub.choices[n] for n in ("runs", "logs", "stop")]:
        s.add_argument("--runs-dir", help="runs folder (default ./runs or $ATTNLAB_RUNS_DIR)")
    return p


def cmd_doctor(args):
    from attnlab import doctor

    if args.checkout is not None and not os.path.isdir(args.checkout):
        raise UsageError("--checkout: %s is not a folder" % args.checkout)
    try:
        return doctor.main(checkout=args.checkout)
    except ValueError as err:
        print("attnlab doctor: %s" % err, file=sys.stderr)
        return 2


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parser().parse_args(argv)
    commands = {"train": cmd_train, "launch": cmd_launch, "kubernetes": cmd_kubernetes,
                "runs": cmd_runs, "logs": cmd_logs, "stop": cmd_stop, "doctor": cmd_doctor,
                "export": cmd_export}
    try:
        return commands[args.command](args)
    except ConfigError as err:
        print("attnlab: bad config: %s" % err, file=sys.stderr)
        return 2
    except UsageError as err:
        print("attnlab %s: %s" % (args.command, err), file=sys.stderr)
        return 2
    except (NotADirectoryError, PermissionError) as err:
        # The runs folder (or a run in it) cannot be written: a setup problem, not a bug.
        print("attnlab %s: %s" % (args.command, err), file=sys.stderr)
        return 2


def entry_point():
    """The `attnlab` console script and `python -m attnlab`."""
    run_and_exit(main)


if __name__ == "__main__":
    entry_point()
