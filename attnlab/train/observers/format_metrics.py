"""One line of epoch metrics, shared by the progress output and train.log."""
import math


def format_metrics(logs):
    """'loss 0.1234 accuracy 0.9876 ...' with short, readable numbers.

    Example:
        >>> format_metrics({"loss": 0.12345, "learning_rate": 0.001})
        'loss 0.1235 lr 0.001'
    """
    parts = []
    for key, value in logs.items():
        value = float(value)
        if key == "learning_rate":
            parts.append("lr %.3g" % value)
        elif math.isfinite(value) and abs(value) >= 1e-3:
            parts.append("%s %.4f" % (key, value))
        else:
            parts.append("%s %.3g" % (key, value))
    return " ".join(parts)
