"""Training: the custom-loop Trainer, schedules, run folders, configs and the CLI."""
from attnlab.train.schedules import NoamSchedule, WarmupCosine
from attnlab.train.trainer import NonFiniteLossError, Trainer

__all__ = ["NoamSchedule", "NonFiniteLossError", "Trainer", "WarmupCosine"]
