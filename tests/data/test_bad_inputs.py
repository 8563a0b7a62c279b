"""Task builders refuse out-of-range arguments with a ValueError that names the argument."""
import math

import pytest

from attnlab.data import make_task
from attnlab.data.dates import make_dates
from attnlab.data.digits import make_digits
from attnlab.data.documents import make_documents
from attnlab.data.sequences import make_sequence_task
from attnlab.data.trigger import make_trigger

SMALL = dict(n_train=8, n_val=4, n_test=4)


@pytest.mark.parametrize("builder", [
    make_dates, make_trigger, make_documents,
    lambda **kw: make_sequence_task("copy", **kw),
], ids=["dates", "trigger", "documents", "copy"])
@pytest.mark.parametrize("name,value", [
    ("n_train", -5), ("n_train", 0), ("n_val", -1), ("n_test", 2.5), ("n_train", math.nan),
    ("n_train", True), ("seed", -1), ("seed", math.nan), ("seed", "zero"),
])
def test_sizes_and_seed(builder, name, value):
    args = dict(SMALL)
    args[name] = value
    with pytest.raises(ValueError, match=r"^%s\b" % name):
        builder(**args)


@pytest.mark.parametrize("args,name", [
    (dict(min_length=5, max_length=3), "min_length"),
    (dict(min_length=-1), "min_length"),
    (dict(max_length=0), "max_length"),
    (dict(num_symbols=0), "num_symbols"),
    (dict(num_symbols=math.inf), "num_symbols"),
])
def test_sequence_lengths(args, name):
    with pytest.raises(ValueError, match=name):
        make_sequence_task("reverse", **dict(SMALL, **args))


def test_sequence_unknown_operation():
    with pytest.raises(ValueError, match="operation"):
        make_sequence_task("rotate", **SMALL)


@pytest.mark.parametrize("args,name", [
    (dict(min_length=9, max_length=8), "min_length"),
    (dict(max_triggers=0), "max_triggers"),
    (dict(max_triggers=9, min_length=8), "max_triggers"),
    (dict(num_classes=-2), "num_classes"),
    (dict(num_filler=math.nan), "num_filler"),
])
def test_trigger_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        make_trigger(**dict(SMALL, **args))


@pytest.mark.parametrize("args,name", [
    (dict(min_sentences=4, max_sentences=2), "min_sentences"),
    (dict(min_words=9, max_words=3), "min_words"),
    (dict(num_distractors=-1), "num_distractors"),
    (dict(max_words=0), "max_words"),
])
def test_documents_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        make_documents(**dict(SMALL, **args))


@pytest.mark.parametrize("formats", ["iso", [], ["iso", "klingon"], [3]])
def test_dates_formats(formats):
    with pytest.raises(ValueError, match="formats"):
        make_dates(formats=formats, **SMALL)


def test_dates_more_examples_than_dates():
    with pytest.raises(ValueError, match="n_train"):
        make_dates(n_train=30000, n_val=1, n_test=1)


@pytest.mark.parametrize("args,name", [
    (dict(val_fraction=math.nan), "val_fraction"),
    (dict(val_fraction=0.0), "val_fraction"),
    (dict(test_fraction=1.5), "test_fraction"),
    (dict(test_fraction="half"), "test_fraction"),
    (dict(val_fraction=0.6, test_fraction=0.5), "val_fraction"),
    (dict(seed=-3), "seed"),
])
def test_digits_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        make_digits(**args)


def test_registry_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        make_task("nope")


@pytest.mark.parametrize("name, args", [
    ("trigger", dict(num_classes=1, num_filler=1, min_length=1, max_length=1,
                     max_triggers=1)),
    ("documents", dict(num_classes=1, num_filler=1, num_distractors=0, min_sentences=1,
                       max_sentences=1, min_words=1, max_words=1)),
])
def test_settings_with_too_few_distinct_examples_are_refused_not_looped_on(name, args):
    with pytest.raises(ValueError, match=r"%s: found only \d+ distinct examples of the 8 that "
                                         r"n_train \+ n_val \+ n_test ask for" % name):
        make_task(name, n_train=4, n_val=2, n_test=2, **args)
