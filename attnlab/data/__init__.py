"""Deterministic, offline tasks made for attention: dates, copy/reverse/sort, triggers, digits,
documents."""
from attnlab.data.registry import TASKS, make_task

__all__ = ["TASKS", "make_task"]
