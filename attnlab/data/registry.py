"""Task names -> builders, so configs can name a task."""
import functools

from attnlab.data.dates import make_dates
from attnlab.data.digits import make_digits
from attnlab.data.documents import make_documents
from attnlab.data.sequences import make_sequence_task
from attnlab.data.trigger import make_trigger

TASKS = {
    "dates": make_dates,
    "copy": functools.partial(make_sequence_task, "copy"),
    "reverse": functools.partial(make_sequence_task, "reverse"),
    "sort": functools.partial(make_sequence_task, "sort"),
    "trigger": make_trigger,
    "digits": make_digits,
    "documents": make_documents,
}


def make_task(name, **kwargs):
    """Build the task called `name` with its keyword arguments (see each builder).

    Example:
        >>> task = make_task("copy", seed=1, n_train=32, n_val=8, n_test=8)
    """
    if name not in TASKS:
        raise ValueError("unknown task %r, expected one of %s" % (name, sorted(TASKS)))
    return TASKS[name](**kwargs)
