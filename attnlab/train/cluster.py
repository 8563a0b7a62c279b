"""Which worker of a tf.distribute cluster this process is."""
import tensorflow as tf


def is_multi_worker(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy over more than one task."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return False
    spec = resolver.cluster_spec().as_dict() if resolver.cluster_spec() else {}
    return sum(len(tasks) if isinstance(tasks, (list, dict)) else 1
               for tasks in spec.values()) > 1


def is_chief(strategy):
    """Whether this process writes the run folder: the chief, or worker 0 without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None) or \
            not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                    "chief" not in resolver.cluster_spec().as_dict())
