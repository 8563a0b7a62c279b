"""The dates task: every format parses back, by an independent parser, to its ISO target."""
import datetime
import re

import numpy as np
import pytest

from attnlab.data import dates
from attnlab.data.dates import make_dates

# An independent reading of each format: strptime patterns (C locale), with ordinal
# suffixes removed first. A new format in attnlab.data.dates must get a line here.
PARSERS = {
    "ordinal_of": "%d of %B %Y",
    "us_slash_short": "%m/%d/%y",
    "weekday_long": "%A, %B %d, %Y",
    "month_day_year": "%B %d, %Y",
    "day_month_year": "%d %B %Y",
    "day_mon_year": "%d %b %Y",
    "mon_day_year": "%b %d, %Y",
    "weekday_short": "%a %d %b %Y",
    "lower_month_day_year": "%B %d, %Y",
    "iso": "%Y-%m-%d",
    "european_dots": "%d.%m.%Y",
    "compact": "%Y%m%d",
    "us_slash_long": "%m/%d/%Y",
}


def parse(text, fmt):
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", r"\1", text)
    return datetime.datetime.strptime(text, PARSERS[fmt]).date()


def test_every_format_has_an_independent_parser():
    assert set(PARSERS) == set(dates.FORMATS)


@pytest.mark.parametrize("fmt", sorted(PARSERS))
def test_each_format_parses_back_to_the_iso_target(fmt):
    task = make_dates(seed=3, n_train=40, n_val=5, n_test=5, formats=[fmt])
    for split in ("train", "validation", "test"):
        for text, iso in zip(task.meta[split]["source_text"], task.meta[split]["target_text"]):
            assert parse(text, fmt).isoformat() == iso, (fmt, text, iso)


def test_weekday_formats_name_the_right_weekday():
    for fmt in ("weekday_long", "weekday_short"):
        day = datetime.date(2021, 3, 3)
        assert dates.format_date(day, fmt).startswith("Wed")
    assert dates.format_date(datetime.date(2021, 3, 3), "ordinal_of") == "3rd of March 2021"
    assert dates.format_date(datetime.date(2021, 3, 11), "ordinal_of").startswith("11th")


def test_arrays_decode_to_the_texts():
    task = make_dates(seed=1, n_train=50, n_val=10, n_test=10)
    x, y, w = task.arrays("train")
    for i in range(50):
        assert task.source_vocab.decode_text(x["source"][i]) == task.meta["train"]["source_text"][i]
        assert task.target_vocab.decode_text(y[i]) == task.meta["train"]["target_text"][i]
        # Teacher forcing: target_in is target_out shifted right behind <s>.
        assert x["target_in"][i, 0] == task.target_vocab.bos_id
        np.testing.assert_array_equal(x["target_in"][i, 1:11], y[i, :10])
    np.testing.assert_array_equal(w, (y != 0).astype(np.float32))
    assert np.all(w.sum(axis=1) == 11)


def test_all_formats_are_used_and_splits_hold_different_dates():
    task = make_dates(seed=0, n_train=2000, n_val=300, n_test=300)
    assert set(task.meta["train"]["format"]) == set(dates.FORMATS)
    sets = [set(task.meta[s]["target_text"]) for s in ("train", "validation", "test")]
    assert len(sets[0]) == 2000
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_same_seed_same_data_other_seed_other_data():
    a = make_dates(seed=5, n_train=30, n_val=5, n_test=5)
    b = make_dates(seed=5, n_train=30, n_val=5, n_test=5)
    c = make_dates(seed=6, n_train=30, n_val=5, n_test=5)
    assert a.meta == b.meta
    np.testing.assert_array_equal(a.arrays("test")[0]["source"], b.arrays("test")[0]["source"])
    assert a.meta["train"]["source_text"] != c.meta["train"]["source_text"]


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="unknown date format 'klingon'"):
        make_dates(n_train=5, n_val=1, n_test=1, formats=["klingon"])
    with pytest.raises(ValueError, match="n_val must be a positive integer, got 0"):
        make_dates(n_train=5, n_val=0, n_test=1)
    with pytest.raises(ValueError, match="exceeds the 29220 distinct dates"):
        make_dates(n_train=29000, n_val=200, n_test=200)
