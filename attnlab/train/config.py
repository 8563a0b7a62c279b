"""Run configs: a small typed schema, checked completely before any training starts.

A config has four sections::

    task:  {name: dates, seed: 0, n_train: 20000, ...}     # arguments of the task builder
    model: {name: rnn_seq2seq, units: 128, ...}            # arguments of the model class
    train: {epochs: 10, batch_size: 64, learning_rate: 0.001, ...}   # see TRAIN_SCHEMA
    eval:  {decode: greedy, beam_width: 4, probe_size: 4}  # see EVAL_SCHEMA

Task and model arguments are typed by the defaults of the builder's signature; arguments
the task determines (vocabulary sizes, number of classes) are filled in and may not be set.
Every error names the offending key, e.g. "train.epochs: expected int, got str 'ten'".
"""
import copy
import inspect
import math
import os

NUMBER = (int, float)

# key -> (types, default, allowed values or None). A None default means optional.
TRAIN_SCHEMA = {
    "epochs": (int, 10, None),
    "batch_size": (int, 64, None),
    "seed": (int, 0, None),
    "optimizer": (str, "adam", ("adam", "sgd")),
    "learning_rate": (NUMBER, 1e-3, None),
    "schedule": ((dict, type(None)), None, None),
    "clip_norm": ((int, float, type(None)), None, None),
    # Final rate of scheduled sampling (seq2seq), reached at the last epoch; null: off.
    "scheduled_sampling": ((int, float, type(None)), None, None),
    "mixed_precision": (bool, False, None),
    "jit_compile": (bool, False, None),
    "nan_policy": (str, "stop", ("stop", "skip")),
    "checkpoint_every": ((int, type(None)), None, None),
    "keep_checkpoints": (int, 3, None),
    "snapshot_every": (int, 1, None),
    # Probe attention images and head metrics in TensorBoard at every snapshot.
    "attention_summaries": (bool, True, None),
    "deterministic": (bool, False, None),
    "distribute": (str, "none", ("none", "mirrored", "multi_worker")),
    # multi_worker: seconds a collective op waits for the other workers before the run
    # fails; null (default) relies on TensorFlow's peer health check instead. TensorFlow
    # keeps one sleeping thread per collective op for this long, so a timeout makes the
    # thread count grow with steps/s x collectives per step x timeout.
    "collective_timeout": ((int, float, type(None)), None, None),
    "verbose": (int, 1, (0, 1)),
}
SCHEDULE_SCHEMA = {
    "noam": {"warmup_steps": (int, 400, None), "scale": (NUMBER, 1.0, None)},
    "warmup_cosine": {"warmup_steps": (int, 100, None), "min_learning_rate": (NUMBER, 0.0, None)},
}
EVAL_SCHEMA = {
    "decode": (str, "greedy", ("greedy", "beam")),
    "beam_width": (int, 4, None),
    "length_penalty": (NUMBER, 0.6, None),
    "probe_size": (int, 4, None),
    "batch_size": (int, 256, None),
}
SECTIONS = ("task", "model", "train", "eval")
# Model arguments the runner fills from the task.
FROM_TASK = ("vocab_size", "num_classes", "source_vocab_size", "target_vocab_size")


class ConfigError(ValueError):
    """A config that cannot run; the message names the key."""


def _models():
    from attnlab.models import (
        AttentionClassifier,
        HierarchicalAttentionNetwork,
        RNNSeq2Seq,
        TransformerSeq2Seq,
    )

    return {"classifier": AttentionClassifier, "han": HierarchicalAttentionNetwork,
            "rnn_seq2seq": RNNSeq2Seq, "transformer": TransformerSeq2Seq}


def _type_name(types):
    types = types if isinstance(types, tuple) else (types,)
    names = ["null" if t is type(None) else t.__name__ for t in types]
    return " or ".join(dict.fromkeys("number" if n == "float" else n for n in names))


def _check_finite(key, value):
    """Refuse NaN and infinities anywhere (YAML's .nan / .inf), nested values included."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError("%s: expected a finite number, got %r" % (key, value))
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite("%s.%s" % (key, k), v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite("%s[%d]" % (key, i), v)


def _check_value(key, value, types, allowed):
    types = types if isinstance(types, tuple) else (types,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise ConfigError("%s: expected %s, got %s %r"
                          % (key, _type_name(types), type(value).__name__, value))
    _check_finite(key, value)
    if allowed is not None and value not in allowed:
        raise ConfigError("%s: expected one of %s, got %r" % (key, list(allowed), value))
    if isinstance(value, NUMBER) and not isinstance(value, bool) and value is not None and \
            value <= 0 and key.split(".")[-1] not in ("seed", "min_learning_rate", "verbose"):
        raise ConfigError("%s: expected a positive number, got %r" % (key, value))
    if key.endswith("scheduled_sampling") and value is not None and value > 1:
        raise ConfigError("%s: expected a rate in (0, 1], got %r" % (key, value))


def _check_section(name, section, schema):
    if not isinstance(section, dict):
        raise ConfigError("%s: expected a mapping, got %s" % (name, type(section).__name__))
    unknown = sorted(set(section) - set(schema), key=str)  # YAML keys may be numbers
    if unknown:
        raise ConfigError("%s.%s: unknown key (known: %s)"
                          % (name, unknown[0], ", ".join(sorted(schema))))
    resolved = {}
    for key, (types, default, allowed) in schema.items():
        value = section.get(key, default)
        if key in section or default is not None:
            _check_value("%s.%s" % (name, key), value, types, allowed)
        resolved[key] = value
    return resolved


def _signature_schema(name, fn, skip=()):
    """{argument: (types, default, None)} from a builder's keyword defaults."""
    schema = {}
    for param in inspect.signature(fn).parameters.values():
        if param.name in skip or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if param.default is param.empty:
            continue
        default = param.default
        if default is None:
            types = object
        elif isinstance(default, bool):
            types = bool
        elif isinstance(default, float):
            types = NUMBER
        else:
            types = type(default)
        schema[param.name] = (types, default, None)
    return schema


def _check_builder_section(section_name, section, registry):
    if not isinstance(section, dict):
        raise ConfigError("%s: expected a mapping with a name, got %s"
                          % (section_name, type(section).__name__))
    if "name" not in section:
        raise ConfigError("%s.name: missing (one of %s)" % (section_name, ", ".join(
            sorted(registry))))
    name = section["name"]
    if not isinstance(name, str) or name not in registry:
        raise ConfigError("%s.name: unknown %s %r (one of %s)"
                          % (section_name, section_name, name, ", ".join(sorted(registry))))
    builder = registry[name]
    target = builder.__init__ if inspect.isclass(builder) else builder
    schema = _signature_schema(section_name, target, skip=("self", "name"))
    for key in FROM_TASK if section_name == "model" else ():
        if key in section:
            raise ConfigError("%s.%s: set from the task, remove it from the config"
                              % (section_name, key))
    args = {k: v for k, v in section.items() if k != "name"}
    unknown = sorted(set(args) - set(schema), key=str)
    if unknown:
        raise ConfigError("%s.%s: unknown key for %s %r (known: %s)"
                          % (section_name, unknown[0], section_name, name,
                             ", ".join(sorted(schema))))
    resolved = {"name": name}
    for key, (types, default, _) in schema.items():
        value = args.get(key, default)
        _check_finite("%s.%s" % (section_name, key), value)
        if types is not object and key in args:
            ok = isinstance(value, types) and (types is bool or not isinstance(value, bool))
            if not ok:
                raise ConfigError("%s.%s: expected %s, got %s %r"
                                  % (section_name, key, _type_name(types),
                                     type(value).__name__, value))
        resolved[key] = value
    return resolved


def validate_config(config):
    """Check a config dict and return it resolved (every default filled in).

    Raises:
        ConfigError (a ValueError) naming the first bad key.

    Example:
        >>> validate_config({"task": {"name": "reverse"}, "model": {"name": "transformer"}})
    """
    if not isinstance(config, dict):
        raise ConfigError("config: expected a mapping with sections %s, got %s"
                          % (", ".join(SECTIONS), type(config).__name__))
    unknown = sorted(set(config) - set(SECTIONS), key=str)
    if unknown:
        raise ConfigError("%s: unknown section (known: %s)" % (unknown[0], ", ".join(SECTIONS)))
    for section in ("task", "model"):
        if section not in config:
            raise ConfigError("%s: missing section (it needs at least a name)" % section)
    from attnlab.data.registry import TASKS

    resolved = {
        "task": _check_builder_section("task", config["task"], TASKS),
        "model": _check_builder_section("model", config["model"], _models()),
        "train": _check_section("train", config.get("train") or {}, TRAIN_SCHEMA),
        "eval": _check_section("eval", config.get("eval") or {}, EVAL_SCHEMA),
    }
    schedule = resolved["train"]["schedule"]
    if schedule is not None:
        if "name" not in schedule or not isinstance(schedule["name"], str) or \
                schedule["name"] not in SCHEDULE_SCHEMA:
            raise ConfigError("train.schedule.name: expected one of %s, got %r"
                              % (sorted(SCHEDULE_SCHEMA), schedule.get("name")))
        rest = {k: v for k, v in schedule.items() if k != "name"}
        checked = _check_section("train.schedule", rest, SCHEDULE_SCHEMA[schedule["name"]])
        resolved["train"]["schedule"] = dict(checked, name=schedule["name"])
    return copy.deepcopy(resolved)


def load_config(path):
    """Read and validate a YAML config file (PyYAML)."""
    import yaml

    if os.path.isdir(path):
        raise ConfigError("cannot read config %s: it is a folder, expected a YAML file" % path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ConfigError("cannot read config %s: %s" % (path, err.strerror or err)) from None
    except UnicodeDecodeError as err:
        raise ConfigError("config %s is not UTF-8 text (byte %d: %s)"
                          % (path, err.start, err.reason)) from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error_line(path, err)) from None
    if config is None:
        raise ConfigError("config %s is empty, expected sections %s"
                          % (path, ", ".join(SECTIONS)))
    return validate_config(config)


def _yaml_error_line(path, err):
    """One line "FILE:LINE:COLUMN: problem" from PyYAML's multi-line message."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or \
        str(err).splitlines()[0]
    if mark is None:
        return "config %s is not valid YAML: %s" % (path, problem)
    return "config %s:%d:%d is not valid YAML: %s" % (path, mark.line + 1, mark.column + 1,
                                                      problem)


def dump_config(config):
    import yaml

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
