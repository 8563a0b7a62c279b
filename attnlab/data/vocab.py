"""A tiny token vocabulary with fixed special ids, shared by every synthetic task."""
import json

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


class Vocabulary:
    """Maps tokens to ids and back; ids 0-3 are <pad>, <s>, </s>, <unk>.

    Padding is id 0 so `Embedding(mask_zero=True)` and `padding_mask` work unchanged.

    Args:
        tokens: the ordinary tokens (characters or words), unique, without the specials.

    Example:
        >>> v = Vocabulary(list("abc"))
        >>> v.decode_text(v.encode_text("cab", eos=True))
        'cab'
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens):
        tokens = list(tokens)
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise TypeError("Vocabulary tokens must be non-empty strings, got %r" % (token,))
            if token in SPECIALS:
                raise ValueError("Vocabulary token %r is reserved for a special token" % token)
        if len(set(tokens)) != len(tokens):
            dup = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ValueError("Vocabulary tokens must be unique, got duplicates %r" % dup)
        self.tokens = list(SPECIALS) + tokens
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self):
        return len(self.tokens)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def token_id(self, token):
        return self._ids.get(token, self.unk_id)

    def encode(self, tokens, bos=False, eos=False):
        """Token ids of `tokens` (unknown tokens -> <unk>), optionally framed by <s> / </s>."""
        ids = [self.token_id(t) for t in tokens]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids):
        """Tokens of `ids`, stopping at the first </s> and dropping <pad> and <s>."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return out

    def encode_text(self, text, bos=False, eos=False):
        """Character-level encoding of a string."""
        return self.encode(list(text), bos=bos, eos=eos)

    def decode_text(self, ids):
        return "".join(self.decode(ids))

    def get_config(self):
        return {"tokens": self.tokens[len(SPECIALS):]}

    @classmethod
    def from_config(cls, config):
        return cls(config["tokens"])

    def to_json(self):
        return json.dumps(self.get_config())

    @classmethod
    def from_json(cls, text):
        return cls.from_config(json.loads(text))


def pad_batch(sequences, length, pad_id=0):
    """Right-pad integer sequences into an int32 array (N, length); longer ones are an error."""
    import numpy as np

    out = np.full((len(sequences), length), pad_id, dtype=np.int32)
    for row, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError("sequence %d has length %d, longer than the padded length %d"
                             % (row, len(seq), length))
        out[row, :len(seq)] = seq
    return out
