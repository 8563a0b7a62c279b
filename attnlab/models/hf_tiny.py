"""Small random-initialized Hugging Face TF models with tokenizers built offline.

The same architectures as the pretrained checkpoints (BERT, DistilBERT, GPT-2, T5, BART),
shrunk, with a tokenizer of the family's kind (WordPiece "##", byte-level BPE "Ġ",
SentencePiece-style unigram "▁") trained in memory on a few sentences. Nothing is read
from disk or the network, so tests and notebooks run every code path of a pretrained model
without its weights. Needs `transformers` (and its `tokenizers`); import this module only
where they are installed.
"""
import functools

from attnlab.validation import check_choice

FAMILIES = ("bert", "distilbert", "gpt2", "t5", "bart")

# A few sentences whose longer words the small vocabularies split into pieces.
CORPUS = (
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog are playing",
    "the quick brown fox jumps over the lazy dog",
    "attention lets every token look at every other token",
    "researchers visualize attention heads in transformers",
    "the model reads the sentence and predicts the next word",
    "heads in later layers attend to the separator token",
)

# Every letter of the corpus' languages and common punctuation gets a token of its own, so
# that new words split into pieces instead of becoming unknown (after lowercasing).
ALPHABET = "abcdefghijklmnopqrstuvwxyz\u00e4\u00f6\u00fc\u00df0123456789.,;:!?'\"()-"

_SPECIALS = {
    "wordpiece": ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
    "bpe": ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
    "unigram": ("<pad>", "</s>", "<unk>"),
}
_KIND = {"bert": "wordpiece", "distilbert": "wordpiece", "gpt2": "bpe", "bart": "bpe",
         "t5": "unigram"}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("attnlab.models.hf_tiny needs the `transformers` package "
                          "(pip install transformers==4.46.3)") from None
    return transformers


@functools.lru_cache(maxsize=None)
def _backend(kind, vocab_size):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials = list(_SPECIALS[kind])
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                            initial_alphabet=list(ALPHABET))
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                          unk_token="<unk>", initial_alphabet=list(ALPHABET))
    tokenizer.train_from_iterator(list(CORPUS), trainer)
    ids = {t: tokenizer.token_to_id(t) for t in specials}
    if kind == "wordpiece":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    elif kind == "bpe":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])])
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", ids["</s>"])])
    return tokenizer.to_str()


def tiny_tokenizer(family, vocab_size=None):
    """A fast tokenizer of the family's kind, trained in memory on `CORPUS`.

    Args:
        family: one of FAMILIES.
        vocab_size: vocabulary size (default: small, so that words outside CORPUS split
            into pieces).

    Returns:
        transformers.PreTrainedTokenizerFast with the family's special tokens.

    Example:
        >>> tiny_tokenizer("bert").tokenize("The cats")
        ['the', 'cat', '##s']
    """
    check_choice("family", family, FAMILIES)
    transformers = _transformers()
    from tokenizers import Tokenizer

    kind = _KIND[family]
    size = vocab_size or {"wordpiece": 240, "bpe": 400, "unigram": 200}[kind]
    backend = Tokenizer.from_str(_backend(kind, size))
    if kind == "wordpiece":
        names = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                     sep_token="[SEP]", mask_token="[MASK]")
    elif family == "gpt2":
        # GPT-2 has one special token, used for start, end and (here) padding.
        names = dict(bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    elif kind == "bpe":
        names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                     cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    else:
        names = dict(eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    if family == "gpt2":
        backend.post_processor = None  # GPT-2 adds no special tokens around a text
    # Only BERT reads segment ids; the other families' tokenizers do not produce them.
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if family == "bert" else \
        ["input_ids", "attention_mask"]
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend,
                                                model_input_names=inputs, **names)


def tiny_config(family, tokenizer, hidden=32, layers=2, heads=4, max_length=128):
    """A small config of the family, sized for `tokenizer`.

    Args:
        family: one of FAMILIES.
        tokenizer: the tokenizer whose ids the model reads (sets vocabulary and special ids).
        hidden, layers, heads: model width D, layers per stack, attention heads.
        max_length: the most positions the model takes.

    Returns:
        transformers PretrainedConfig.

    Example:
        >>> tiny_config("bert", tiny_tokenizer("bert")).num_hidden_layers
        2
    """
    check_choice("family", family, FAMILIES)
    transformers = _transformers()
    vocab = len(tokenizer)
    if family == "bert":
        return transformers.BertConfig(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=4 * hidden,
            max_position_embeddings=max_length, pad_token_id=tokenizer.pad_token_id)
    if family == "distilbert":
        return transformers.DistilBertConfig(
            vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads,
            hidden_dim=4 * hidden, max_position_embeddings=max_length,
            pad_token_id=tokenizer.pad_token_id)
    if family == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
            n_positions=max_length, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id)
    if family == "t5":
        return transformers.T5Config(
            vocab_size=vocab, d_model=hidden, d_kv=hidden // heads, d_ff=4 * hidden,
            num_layers=layers, num_decoder_layers=layers, num_heads=heads,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id)
    return transformers.BartConfig(
        vocab_size=vocab, d_model=hidden, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=4 * hidden, decoder_ffn_dim=4 * hidden,
        max_position_embeddings=max_length, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id)


_MODEL_CLASSES = {"bert": "TFBertModel", "distilbert": "TFDistilBertModel",
                  "gpt2": "TFGPT2Model", "t5": "TFT5Model", "bart": "TFBartModel"}


def tiny_hf_model(family, seed=0, **config):
    """A random-initialized base model of the family and its tokenizer.

    Args:
        family: one of FAMILIES.
        seed: TensorFlow seed for the initial weights.
        **config: passed to `tiny_config` (hidden, layers, heads, max_length).

    Returns:
        (model, tokenizer); the model is built (its weights exist).

    Example:
        >>> model, tokenizer = tiny_hf_model("bert")
        >>> model(tokenizer(["the cat sat"], return_tensors="tf")).last_hidden_state.shape
        TensorShape([1, 5, 32])
    """
    import tensorflow as tf

    tokenizer = tiny_tokenizer(family)
    transformers = _transformers()
    tf.random.set_seed(seed)
    model = getattr(transformers, _MODEL_CLASSES[family])(tiny_config(family, tokenizer,
                                                                      **config))
    model(model.dummy_inputs)  # create the weights now, under the seed
    return model, tokenizer
