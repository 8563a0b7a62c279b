"""Vocabulary: ids, round trips and errors."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnlab.data.vocab import Vocabulary, pad_batch

LETTERS = list("abcdefgh")


@given(st.text(alphabet="".join(LETTERS), max_size=20))
def test_text_round_trip(text):
    vocab = Vocabulary(LETTERS)
    ids = vocab.encode_text(text, bos=True, eos=True)
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.decode_text(ids + [vocab.pad_id] * 3) == text


def test_special_ids_and_unknown_tokens():
    vocab = Vocabulary(["x", "y"])
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert len(vocab) == 6
    assert vocab.encode(["y", "zzz"]) == [5, 3]
    assert vocab.decode([4, 2, 5]) == ["x"]  # stops at </s>


def test_json_round_trip():
    vocab = Vocabulary(["hello", "world"])
    assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_bad_vocabularies_name_the_token():
    with pytest.raises(ValueError, match=r"duplicates \['a'\]"):
        Vocabulary(["a", "b", "a"])
    with pytest.raises(ValueError, match="'<pad>' is reserved"):
        Vocabulary(["<pad>"])
    with pytest.raises(TypeError, match="got 3"):
        Vocabulary(["a", 3])


def test_pad_batch_rejects_long_sequences():
    assert pad_batch([[1, 2], [3]], 3).tolist() == [[1, 2, 0], [3, 0, 0]]
    with pytest.raises(ValueError, match="sequence 1 has length 4, longer than the padded "
                                         "length 3"):
        pad_batch([[1], [1, 2, 3, 4]], 3)
