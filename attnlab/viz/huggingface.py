"""Attention of Hugging Face `transformers` TensorFlow models, as snapshots for the explorer.

These models compute their attention weights themselves when called with
`output_attentions=True`. This adapter makes that one call and turns what comes back (one
(B, H, T, S) tensor per layer, per kind of attention) and the tokenizer's tokens into
AttentionSnapshots; nothing inside the model is wrapped or changed. transformers is not
imported here: any TF model with a `config` that answers `output_attentions` works (BERT,
DistilBERT, RoBERTa, GPT-2, T5, BART, ... and their task heads).

The result maps each attention field of the model output to one snapshot:

    encoder-only, decoder-only   "attentions"                              (B, H, T, T)
    encoder-decoder              "encoder_attentions"  encoder tokens      (B, H, S, S)
                                 "decoder_attentions"  decoder tokens      (B, H, T, T)
                                 "cross_attentions"    decoder x encoder   (B, H, T, S)

One snapshot per field keeps each one's tokens unambiguous (encoder and decoder inputs can
have the same length) and keeps attention rollout within one stack.
"""
import collections

import numpy as np

from attnlab.viz.snapshots import make_snapshot
from attnlab.viz.subwords import merge_pieces, word_groups

SPECIAL = "\u00ab{}\u00bb"  # «[CLS]»: special tokens stand out from words in the tick labels
_PREFIXES = collections.OrderedDict([("attentions", ""), ("encoder_attentions", "encoder/"),
                                     ("decoder_attentions", "decoder/"),
                                     ("cross_attentions", "cross/")])


def _model_config(model):
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "is_encoder_decoder"):
        raise TypeError("model must be a Hugging Face transformers TF model (an object with a "
                        "`config`, e.g. from TFAutoModel.from_pretrained), got %s"
                        % type(model).__name__)
    return config


def _ids_and_arguments(inputs, name):
    """(B, T) integer ids and the keyword arguments a model call gets from `inputs`."""
    if hasattr(inputs, "keys"):  # BatchEncoding or dict
        arguments = {key: inputs[key] for key in inputs.keys()}
        if "input_ids" not in arguments:
            raise ValueError("%s must contain 'input_ids' (tokens are read from them), got "
                             "keys %s" % (name, sorted(arguments)))
    else:
        arguments = {"input_ids": inputs}
    ids = np.asarray(arguments["input_ids"])
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError("%s: input_ids must be integer token ids of shape (B, T), got dtype "
                         "%s shape %s" % (name, ids.dtype, ids.shape))
    return ids, arguments


def _tokens(ids, tokenizer, special):
    """B lists of the tokens as the tokenizer writes them (ids as text without one)."""
    if tokenizer is None:
        return [[str(int(i)) for i in row] for row in ids]
    special_ids = set(getattr(tokenizer, "all_special_ids", ()))
    rows = []
    for row in ids:
        tokens = tokenizer.convert_ids_to_tokens([int(i) for i in row])
        if special is not None:
            tokens = [special.format(t) if int(i) in special_ids else t
                      for i, t in zip(row, tokens)]
        rows.append([str(t) for t in tokens])
    return rows


def _word_ids(inputs, ids, name):
    """B lists of word ids (None for special tokens), from a fast tokenizer's BatchEncoding."""
    try:
        return [inputs.word_ids(b) for b in range(ids.shape[0])]
    except (AttributeError, ValueError):
        raise ValueError("merge_subwords=True needs %s to be the BatchEncoding of a fast "
                         "tokenizer (its word_ids() tells which pieces form a word), got %s"
                         % (name, type(inputs).__name__)) from None


class _Side:
    """The tokens (and word groups) of one input sequence: encoder or decoder side."""

    def __init__(self, inputs, name, tokenizer, special, merge):
        self.ids, self.arguments = _ids_and_arguments(inputs, name)
        self.tokens = _tokens(self.ids, tokenizer, special)
        self.groups = None
        if merge:
            word_ids = _word_ids(inputs, self.ids, name)
            self.groups = [word_groups(row) for row in word_ids]
            self.tokens = self._merged_tokens(word_ids, _tokens(self.ids, tokenizer, None),
                                              tokenizer)

    def _merged_tokens(self, word_ids, raw, tokenizer):
        # A word's pieces are joined the tokenizer's way ("##", "Ġ", "▁" markers undone);
        # positions outside words (special tokens) keep their marked label.
        convert = getattr(tokenizer, "convert_tokens_to_string", None)
        length = max(len(g) for g in self.groups)
        rows = []
        for b, groups in enumerate(self.groups):
            row = []
            for group in groups:
                pieces = [raw[b][p] for p in group]
                marked = self.tokens[b][group[0]]
                if word_ids[b][group[0]] is None or (len(group) == 1 and marked != pieces[0]):
                    row.append(marked)  # a special token, also one standing for a word ([UNK])
                else:
                    row.append(convert(pieces).strip() if convert else "".join(pieces))
            rows.append(row + [""] * (length - len(row)))
        return rows


def _to_array(part, layer, tensor):
    if tensor is None:
        raise ValueError("the model returned no %s for layer %d" % (part, layer))
    array = np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor, np.float32)
    if array.ndim != 4:
        raise ValueError("%s of layer %d has shape %s; expected (B, H, T, S)"
                         % (part, layer, array.shape))
    return array


def capture_hf_attention(model, inputs, tokenizer=None, decoder_inputs=None,
                         merge_subwords=False, special=SPECIAL, return_outputs=False,
                         training=False):
    """Run a Hugging Face TF model once and return its attention as explorer snapshots.

    Args:
        model: a transformers TF model (TFAutoModel..., any task head).
        inputs: the tokenizer's output (BatchEncoding or dict with "input_ids" (B, T) and
            e.g. "attention_mask"), or the (B, T) input ids; passed to the model as they are.
        tokenizer: the tokenizer that made `inputs`; tokens are shown as it writes them
            ("##ing", "Ġthe"). Without one the ids are shown.
        decoder_inputs: for encoder-decoder models (T5, BART): the decoder's BatchEncoding,
            dict or (B, T) ids; given as decoder_input_ids / decoder_attention_mask.
        merge_subwords: True merges the pieces of each word into one token (rows averaged,
            columns summed, see `attnlab.viz.subwords`); needs fast-tokenizer BatchEncodings.
        special: format string marking special tokens ("[CLS]" -> "«[CLS]»"); None leaves
            them as written.
        return_outputs: also return the model's outputs of this call.
        training: passed to the model call.

    Returns:
        OrderedDict field -> AttentionSnapshot, the fields "attentions" (encoder-only and
        decoder-only models) or "encoder_attentions", "decoder_attentions",
        "cross_attentions"; weights are (B, H, T, S) float32 per layer ("layer_0", ... or
        "encoder/layer_0", ...). With return_outputs: (that dict, model outputs).

    Raises:
        TypeError: `model` is not a transformers model.
        ValueError: bad inputs, decoder inputs missing (or given to a model without a
            decoder), or the model returned no attention.

    Example:
        >>> batch = tokenizer(["the cat sat"], return_tensors="tf")
        >>> captured = capture_hf_attention(model, batch, tokenizer, merge_subwords=True)
        >>> AttentionExplorer(captured["attentions"])
    """
    config = _model_config(model)
    if special is not None and (not isinstance(special, str) or "{}" not in special):
        raise ValueError("special must be a format string with one {} for the token (e.g. "
                         "'<{}>') or None, got %r" % (special,))
    merge = bool(merge_subwords)
    source = _Side(inputs, "inputs", tokenizer, special, merge)
    arguments = dict(source.arguments)
    if config.is_encoder_decoder:
        if decoder_inputs is None:
            raise ValueError("%s is an encoder-decoder model: pass decoder_inputs (the "
                             "decoder's token ids or BatchEncoding)" % type(model).__name__)
        target = _Side(decoder_inputs, "decoder_inputs", tokenizer, special, merge)
        arguments["decoder_input_ids"] = target.arguments["input_ids"]
        if "attention_mask" in target.arguments:
            arguments["decoder_attention_mask"] = target.arguments["attention_mask"]
        sides = {"encoder_attentions": (source, source), "decoder_attentions": (target, target),
                 "cross_attentions": (target, source)}
    else:
        if decoder_inputs is not None:
            raise ValueError("%s has no decoder; decoder_inputs must be None"
                             % type(model).__name__)
        sides = {"attentions": (source, source)}
    outputs = model(**arguments, output_attentions=True, return_dict=True, training=training)

    captured = collections.OrderedDict()
    for part, prefix in _PREFIXES.items():
        if part not in sides:
            continue
        layers = getattr(outputs, part, None)
        if not layers:
            raise ValueError("the model returned no %s although it was called with "
                             "output_attentions=True" % part)
        query, key = sides[part]
        weights = collections.OrderedDict()
        for i, tensor in enumerate(layers):
            array = _to_array(part, i, tensor)
            if merge:
                array = merge_pieces(array, query.groups, key.groups)
            weights["%slayer_%d" % (prefix, i)] = array
        captured[part] = make_snapshot(weights, query.tokens, key.tokens)
    return (captured, outputs) if return_outputs else captured
