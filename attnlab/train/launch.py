"""One worker of a multi-worker run: the cluster from `--workers`, TF_CONFIG, chief or scratch.

`attnlab launch CONFIG --workers HOST:PORT,HOST:PORT --index I` is run once per worker (one
per host or container) with the same list; each writes TF_CONFIG for its index and trains
with TensorFlow's MultiWorkerMirroredStrategy. Worker 0 is the chief: it owns the run folder
(checkpoints, TensorBoard, train.log, status.json). The other workers write into a scratch
folder that is deleted when they end, and restore from the chief's checkpoints folder.
"""
import errno
import json
import os
import re
import shutil
import socket
import tempfile

# HOST:PORT or [IPV6]:PORT; the host is a name, an IPv4 or a bracketed IPv6 address.
_ENTRY = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d+)$")
INDEX_ENV = "ATTNLAB_WORKER_INDEX"


class LaunchError(ValueError):
    """A launch that cannot start: a bad --workers list, index or port; the message says which."""


def parse_workers(text):
    """The (host, port) pairs of a `--workers` list.

    Args:
        text: comma-separated HOST:PORT entries, worker 0 (the chief) first.

    Returns:
        A list of (host, port) tuples, in the order given.

    Example:
        >>> parse_workers("10.0.0.5:23456,10.0.0.6:23456")
        [('10.0.0.5', 23456), ('10.0.0.6', 23456)]
    """
    if not isinstance(text, str) or not text.strip():
        raise LaunchError("--workers: expected HOST:PORT,HOST:PORT,..., got %r" % (text,))
    workers = []
    for position, raw in enumerate(text.split(",")):
        entry = raw.strip()
        match = _ENTRY.match(entry)
        if not match:
            raise LaunchError("--workers: entry %d %r is not HOST:PORT (e.g. 10.0.0.5:23456 or "
                              "[fd00::5]:23456)" % (position, raw))
        port = int(match.group("port"))
        if not 1 <= port <= 65535:
            raise LaunchError("--workers: entry %d %r has port %d, outside 1-65535"
                              % (position, entry, port))
        host = match.group("host") or "[%s]" % match.group("ipv6")
        if (host, port) in workers:
            raise LaunchError("--workers: %s:%d is listed twice (entries %d and %d)"
                              % (host, port, workers.index((host, port)), position))
        workers.append((host, port))
    return workers


def resolve_index(index, workers):
    """This worker's index: `index`, else $ATTNLAB_WORKER_INDEX, checked against the list.

    Args:
        index: the `--index` value (int, str or None).
        workers: the parsed worker list.

    Returns:
        The index as an int in [0, len(workers)).

    Example:
        >>> resolve_index("1", [("a", 1), ("b", 1)])
        1
    """
    source = "--index"
    if index is None:
        index, source = os.environ.get(INDEX_ENV), "$" + INDEX_ENV
        if index is None:
            raise LaunchError("--index: missing (give --index I or set $%s)" % INDEX_ENV)
    try:
        value = int(str(index).strip())
    except ValueError:
        raise LaunchError("%s: expected an integer, got %r" % (source, index)) from None
    if not 0 <= value < len(workers):
        raise LaunchError("%s: %d is out of range for %d workers (0 to %d)"
                          % (source, value, len(workers), len(workers) - 1))
    return value


def tf_config(workers, index):
    """The TF_CONFIG JSON of worker `index` of `workers` (worker 0 is the chief).

    Args:
        workers: list of (host, port).
        index: this worker's position in the list.

    Returns:
        The JSON string that MultiWorkerMirroredStrategy reads from $TF_CONFIG.

    Example:
        >>> tf_config([("a", 1), ("b", 2)], 1)
        '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}'
    """
    return json.dumps({"cluster": {"worker": ["%s:%d" % w for w in workers]},
                       "task": {"type": "worker", "index": index}})


def check_port_free(port, entry=""):
    """Raise LaunchError when another process already listens on `port` on this machine.

    TensorFlow's gRPC server reuses ports (SO_REUSEPORT), so a second server on a busy port
    would start and then talk to the wrong process; this probe refuses it up front.

    Args:
        port: the TCP port this worker's server is about to listen on.
        entry: the --workers entry, for the message.

    Returns:
        None.

    Example:
        >>> check_port_free(23456, "10.0.0.5:23456")
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR: connections of an earlier run in TIME_WAIT do not count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("", port))
        probe.listen(1)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise LaunchError("port %d of this worker (%s) is already in use on this machine; "
                              "stop what listens there or pick another port in --workers"
                              % (port, entry or port)) from None
        raise LaunchError("cannot listen on port %d of this worker (%s): %s"
                          % (port, entry or port, err)) from None
    finally:
        probe.close()


def free_local_ports(count):
    """`count` distinct TCP ports on 127.0.0.1 that are free now, for a cluster on one machine.

    Args:
        count: how many ports.

    Returns:
        A list of port numbers (the OS may hand one out again once it is released).

    Example:
        >>> workers = ",".join("127.0.0.1:%d" % p for p in free_local_ports(2))
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))  # held together, so the ports differ
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def scratch_dir(index, parent=None):
    """A new private folder for a non-chief worker's run files (deleted when it ends).

    Args:
        index: the worker index (part of the folder name).
        parent: where to make it (default: the system temporary folder).

    Returns:
        The folder's path.

    Example:
        >>> path = scratch_dir(1)
    """
    if parent:
        os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix="attnlab-worker%d-" % index, dir=parent)


def remove_scratch(path):
    """Delete a scratch folder made by `scratch_dir` (nothing in it is kept).

    Args:
        path: the folder.

    Returns:
        None.

    Example:
        >>> remove_scratch(scratch_dir(1))
    """
    shutil.rmtree(path, ignore_errors=True)
