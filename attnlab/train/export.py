"""Export a trained run as a TensorFlow SavedModel that serves without attnlab.

    attnlab export RUN_OR_CHECKPOINT OUT [--attention] [--max-length N] [--force]

The SavedModel holds one tf.Module with the model's variables and one traced function; no
Keras object is saved, so `tf.saved_model.load`, `saved_model_cli` and TensorFlow Serving
load it with nothing but TensorFlow. Its `serving_default` signature:

- input `tokens`: int32 (B, T) token ids of the task's source vocabulary, 0 = padding.
- classifier: `probabilities` float32 (B, num_classes) and `label` int32 (B,).
- seq2seq models: `target_ids` int32 (B, max_length), greedy-decoded target ids (the
  end token </s>, then padding 0; the start token <s> is not included).
- with attention=True, the model's attention weights besides, named after attnlab's
  attention names with "/" -> "_" (H heads, T input tokens, L = max_length):
  classifier `attention` (B, H, T, T); transformer `encoder_{i}_self_attention`
  (B, H, T, T), `decoder_{i}_self_attention` (B, H, L, L), `decoder_{i}_cross_attention`
  (B, H, L, T) for each layer i; rnn_seq2seq `cross_attention` (B, 1, L, T). Decoder rows
  are the queries that produced each output id (position l predicts target_ids[:, l]).

The vocabularies are in OUT/assets/vocab.json (see `vocab_document`); the loaded object's
`vocab` asset gives its path.
"""
import json
import os
import shutil
import tempfile

from attnlab.data.vocab import SPECIALS

VOCAB_FILE = "vocab.json"


class ExportError(ValueError):
    """An export that cannot be made (no run, no checkpoint, OUT taken); names the problem."""


def _checkpoint_prefix(path):
    """The checkpoint prefix of a prefix, .index or .data-* path, or None if it is none."""
    path = os.path.abspath(path)
    base = os.path.basename(path)
    if base.endswith(".index"):
        path = path[:-len(".index")]
    elif ".data-" in base:
        path = path[:path.rindex(".data-")]
    return path if os.path.isfile(path + ".index") else None


def locate(run_or_checkpoint):
    """The run folder and checkpoint prefix that `run_or_checkpoint` names.

    Args:
        run_or_checkpoint: a run folder (its newest checkpoint), its checkpoints folder (the
            newest too), or one checkpoint: its prefix (runs/NAME/checkpoints/ckpt-8) or
            one of its files (ckpt-8.index, ckpt-8.data-00000-of-00001).

    Returns:
        (run folder, checkpoint prefix), absolute paths.

    Raises:
        ExportError naming what is missing.

    Example:
        >>> run, checkpoint = locate("runs/reverse")
    """
    import tensorflow as tf

    path = os.path.abspath(run_or_checkpoint)
    prefix = _checkpoint_prefix(path)
    if prefix is not None:
        run = os.path.dirname(os.path.dirname(prefix))
        if not os.path.isfile(os.path.join(run, "config.yaml")):
            raise ExportError("checkpoint %s is not inside a run folder (expected "
                              "RUN/checkpoints/ckpt-N with RUN/config.yaml)" % prefix)
        return run, prefix
    if not os.path.exists(path):
        raise ExportError("no run folder or checkpoint at %s" % path)
    if not os.path.isdir(path):
        raise ExportError("%s is neither a run folder nor a checkpoint (a checkpoint is "
                          "named by its prefix, e.g. runs/NAME/checkpoints/ckpt-8)" % path)
    run = path
    if os.path.basename(path) == "checkpoints" and \
            os.path.isfile(os.path.join(os.path.dirname(path), "config.yaml")):
        run = os.path.dirname(path)
    if not os.path.isfile(os.path.join(run, "config.yaml")):
        raise ExportError("%s is not a run folder: it has no config.yaml (a run folder is "
                          "made by `attnlab train`)" % run)
    folder = os.path.join(run, "checkpoints")
    prefix = tf.train.latest_checkpoint(folder) if os.path.isdir(folder) else None
    if prefix is None:
        raise ExportError("run %s has no checkpoint in %s yet (a run saves one at the end "
                          "of each epoch)" % (run, folder))
    return run, os.path.abspath(prefix)


def load_run_model(run_or_checkpoint):
    """Rebuild a run's model from its config and restore a checkpoint into it.

    Args:
        run_or_checkpoint: see `locate`.

    Returns:
        (model, task, config, checkpoint prefix). The model is built in float32 whatever
        the run trained in (mixed precision keeps float32 weights).

    Example:
        >>> model, task, config, checkpoint = load_run_model("runs/reverse")
    """
    import tensorflow as tf

    from attnlab.data.registry import make_task
    from attnlab.train.config import load_config
    from attnlab.train.runner import build_model

    run, prefix = locate(run_or_checkpoint)
    config = load_config(os.path.join(run, "config.yaml"))
    task = make_task(config["task"]["name"],
                     **{k: v for k, v in config["task"].items() if k != "name"})
    if task.source_vocab is None:
        raise ExportError("task %r has no token vocabulary: only token models can be "
                          "exported" % task.name)
    if task.kind != "seq2seq" and task.arrays("test")[0].ndim != 2:
        # The serving signature takes (B, T) token rows; documents are (B, S, T).
        raise ExportError("run %s: model %r reads (B, sentences, words) documents; export "
                          "serves token rows (B, T) only (classifiers and seq2seq models)"
                          % (run, config["model"]["name"]))
    policy = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("float32")
    try:
        model = build_model(config, task)
    except ValueError as err:
        raise ExportError("run %s: %s" % (run, err)) from None
    finally:
        tf.keras.mixed_precision.set_global_policy(policy)
    # Create the variables first so the restore checks every one of them.
    if task.kind == "seq2seq":
        model({"source": tf.ones([1, 2], tf.int32), "target_in": tf.ones([1, 2], tf.int32)},
              training=False)
        if getattr(model, "has_kv_cache", False):
            model.init_decode_state(model.encode(tf.ones([1, 2], tf.int32)), 1)
    else:
        model(tf.ones([1, 2], tf.int32), training=False)
    try:
        # Only the model: optimizer slots and counters of the checkpoint are not needed.
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial() \
            .assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as err:
        raise ExportError("checkpoint %s does not restore into the model of %s: %s"
                          % (prefix, os.path.join(run, "config.yaml"), err)) from None
    return model, task, config, prefix


def target_length(task):
    """The task's target length (its padded target arrays' width), for seq2seq tasks."""
    return int(task.arrays("test")[1].shape[1])


def output_names(model, task, attention=False, max_length=None):
    """{signature output name: "shape dtype"} of an export (B batch, T input length).

    Example:
        >>> output_names(model, task, attention=True, max_length=6)["target_ids"]
        '(B, 6) int32'
    """
    if task.kind != "seq2seq":
        names = {"probabilities": "(B, %d) float32" % task.num_classes, "label": "(B,) int32"}
        heads = model.num_heads if model.attention_type == "multi_head" else 1
        if attention:
            names["attention"] = "(B, %d, T, T) float32" % heads
        return names
    length = max_length or target_length(task)
    names = {"target_ids": "(B, %d) int32" % length}
    if attention:
        heads = getattr(model, "num_heads", 1)
        queries = {"encoder": "T", "decoder": str(length), "": str(length)}
        keys = {"self_attention": None, "cross_attention": "T"}
        for key in _attention_keys(model, task):
            stack, kind = (key.split("/")[0], key.split("/")[-1]) if "/" in key else ("", key)
            names[_attention_name(key)] = "(B, %d, %s, %s) float32" % (
                heads, queries[stack], keys[kind] or queries[stack])
    return names


def _attention_name(key):
    return key.replace("/", "_")


def _attention_keys(model, task):
    """The keys of the model's attention dict (return_attention=True), in a fixed order."""
    if task.kind != "seq2seq":
        return ["attention"]
    if hasattr(model, "encoder_blocks"):
        return (["encoder/%d/self_attention" % i for i in range(len(model.encoder_blocks))] +
                ["decoder/%d/%s_attention" % (i, kind) for i in range(len(model.decoder_blocks))
                 for kind in ("self", "cross")])
    return ["cross_attention"]


def serving_function(model, task, attention=False, max_length=None):
    """The tf.function of the `serving_default` signature (see the module docstring).

    Args:
        model: a built classifier or seq2seq model (attnlab.models).
        task: its task (kind and special ids).
        attention: also output the attention weights.
        max_length: seq2seq: target ids to generate (default the task's target length).

    Returns:
        A tf.function with input signature tokens int32 (None, None).

    Example:
        >>> serve = serving_function(model, task, attention=True)
        >>> serve(tf.constant([[5, 6, 7, 2]]))["target_ids"]
    """
    import tensorflow as tf

    from attnlab.decoding import greedy_decode_graph

    spec = tf.TensorSpec([None, None], tf.int32, name="tokens")
    if task.kind != "seq2seq":
        @tf.function(input_signature=[spec])
        def classify(tokens):
            if attention:
                logits, weights = model(tokens, training=False, return_attention=True)
            else:
                logits, weights = model(tokens, training=False), {}
            outputs = {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), -1),
                       "label": tf.argmax(logits, -1, output_type=tf.int32)}
            outputs.update({_attention_name(k): tf.cast(w, tf.float32)
                            for k, w in weights.items()})
            return outputs
        return classify

    vocab = task.target_vocab
    length = max_length or target_length(task)
    limit = getattr(model, "max_length", None)
    if limit is not None and length > limit:
        raise ExportError("max_length %d exceeds the model's max_length %d (its KV cache)"
                          % (length, limit))

    @tf.function(input_signature=[spec])
    def translate(tokens):
        ids = greedy_decode_graph(model, tokens, length, bos_id=vocab.bos_id,
                                  eos_id=vocab.eos_id, pad_id=vocab.pad_id)
        outputs = {"target_ids": ids}
        if attention:
            # Teacher-forced on the decoded ids: the same queries that chose each id.
            start = tf.fill([tf.shape(ids)[0], 1], tf.constant(vocab.bos_id, tf.int32))
            target_in = tf.concat([start, ids[:, :-1]], axis=1)
            _, weights = model({"source": tokens, "target_in": target_in}, training=False,
                               return_attention=True)
            outputs.update({_attention_name(k): tf.cast(w, tf.float32)
                            for k, w in weights.items()})
        return outputs
    return translate


def vocab_document(task, config, checkpoint, attention, max_length):
    """The JSON written to OUT/assets/vocab.json: the vocabularies and what the export is.

    Keys: "task", "kind", "model" (the config's model section), "checkpoint" (its file
    name), "source_vocab" (token of each id, specials first), "target_vocab" (seq2seq, else
    null), "num_classes" (classification, else null), "special_ids", "max_length"
    (seq2seq, else null), "attention" (whether the attention outputs are present).
    """
    def tokens(vocab):
        return None if vocab is None else list(vocab.tokens)

    return {"task": task.name, "kind": task.kind, "model": config["model"],
            "checkpoint": os.path.basename(checkpoint),
            "source_vocab": tokens(task.source_vocab),
            "target_vocab": tokens(task.target_vocab),
            "num_classes": task.num_classes if task.kind != "seq2seq" else None,
            "special_ids": {token: i for i, token in enumerate(SPECIALS)},
            "max_length": max_length, "attention": bool(attention)}


def _check_out(out, force):
    out = os.path.abspath(out)
    if os.path.isdir(out) and not os.listdir(out):
        return out
    if os.path.lexists(out) and not force:
        raise ExportError("%s exists and is not empty; pass --force (force=True) to replace "
                          "it" % out)
    return out


def export_model(model, task, out, config=None, checkpoint="", attention=False,
                 max_length=None, force=False):
    """Write a built, restored model as a SavedModel with a `serving_default` signature.

    The SavedModel is written into a temporary sibling folder of `out` and renamed to `out`
    at the end, so a failed export leaves nothing behind.

    Args:
        model: a classifier or seq2seq model of attnlab.models, weights loaded.
        task: its task (vocabularies, kind, target length).
        out: the SavedModel folder to create (missing, or empty; else force=True).
        config: the run's config (recorded in vocab.json).
        checkpoint: the checkpoint the weights came from (recorded in vocab.json).
        attention: also output the attention weights (module docstring).
        max_length: seq2seq: target ids to generate (default: the task's target length).
        force: replace an existing `out`.

    Returns:
        The absolute path of `out`.

    Example:
        >>> export_model(model, task, "export/reverse/1", attention=True)
    """
    import tensorflow as tf

    out = _check_out(out, force)
    if max_length is not None and (isinstance(max_length, bool) or
                                   not isinstance(max_length, int) or max_length < 1):
        raise ExportError("max_length must be a positive int, got %r" % (max_length,))
    if task.kind != "seq2seq":
        if max_length is not None:
            raise ExportError("max_length applies to seq2seq models; %r is a %s task"
                              % (task.name, task.kind))
    elif max_length is None:
        max_length = target_length(task)
    serve = serving_function(model, task, attention=attention, max_length=max_length)
    concrete = serve.get_concrete_function()
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix="." + os.path.basename(out) + ".export-", dir=parent)
    try:
        vocab_dir = os.path.join(staging, "vocab")
        os.mkdir(vocab_dir)
        document = vocab_document(task, config or {"model": None}, checkpoint, attention,
                                  max_length)
        with open(os.path.join(vocab_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
        module = tf.Module()
        # The weights only (no Keras object): loading then needs no attnlab class.
        module.model_variables = list(model.variables)
        module.serve = serve
        module.vocab = tf.saved_model.Asset(os.path.join(vocab_dir, VOCAB_FILE))
        saved = os.path.join(staging, "model")
        tf.saved_model.save(module, saved, signatures={"serving_default": concrete})
        _replace(saved, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _replace(source, out):
    """Move the folder `source` to `out`, replacing what is there only once it is complete."""
    if os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)
    if not os.path.lexists(out):
        os.rename(source, out)
        return
    old = source + ".old"
    os.rename(out, old)
    try:
        os.rename(source, out)
    except OSError:
        os.rename(old, out)  # the previous export stays
        raise
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old)
    else:
        os.remove(old)


def export_run(run_or_checkpoint, out, attention=False, max_length=None, force=False):
    """Export a run's newest checkpoint (or the one named) as a servable SavedModel.

    Args:
        run_or_checkpoint: a run folder, its checkpoints folder, or a checkpoint prefix or
            file inside one (see `locate`).
        out: the SavedModel folder to create.
        attention: also output the attention weights.
        max_length: seq2seq: target ids to generate (default: the task's target length).
        force: replace an existing, non-empty `out`.

    Returns:
        {"path": out, "checkpoint": the checkpoint prefix, "outputs": {name: shape}}.

    Raises:
        ExportError (a ValueError) naming the problem; nothing is written then.

    Example:
        >>> export_run("runs/reverse", "export/reverse/1", attention=True)
    """
    _check_out(out, force)  # before the slow part
    model, task, config, checkpoint = load_run_model(run_or_checkpoint)
    path = export_model(model, task, out, config=config, checkpoint=checkpoint,
                        attention=attention, max_length=max_length, force=force)
    return {"path": path, "checkpoint": checkpoint,
            "outputs": output_names(model, task, attention, max_length)}

