"""Human-written dates in many formats -> ISO "YYYY-MM-DD", the classic attention task."""
import datetime

import numpy as np

from attnlab.data.task import SPLITS, Task, check_seed, split_counts
from attnlab.data.vocab import Vocabulary, pad_batch

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# 2-digit years are read as 1970-2069 by most parsers (Python's %y uses 1969-2068); the
# range keeps "03/03/21" unambiguous.
FIRST_DATE = datetime.date(1970, 1, 1)
LAST_DATE = datetime.date(2049, 12, 31)


def _ordinal(n):
    if 10 <= n % 100 <= 20:
        return "%dth" % n
    return "%d%s" % (n, {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th"))


# name -> writer. Only one numeric day/month order per separator (US "/" and European "."),
# so that every string has exactly one reading.
FORMATS = {
    "ordinal_of": lambda d: "%s of %s %d" % (_ordinal(d.day), MONTHS[d.month - 1], d.year),
    "us_slash_short": lambda d: "%02d/%02d/%02d" % (d.month, d.day, d.year % 100),
    "weekday_long": lambda d: "%s, %s %d, %d" % (WEEKDAYS[d.weekday()], MONTHS[d.month - 1],
                                                  d.day, d.year),
    "month_day_year": lambda d: "%s %d, %d" % (MONTHS[d.month - 1], d.day, d.year),
    "day_month_year": lambda d: "%d %s %d" % (d.day, MONTHS[d.month - 1], d.year),
    "day_mon_year": lambda d: "%d %s %d" % (d.day, MONTHS[d.month - 1][:3], d.year),
    "mon_day_year": lambda d: "%s %d, %d" % (MONTHS[d.month - 1][:3], d.day, d.year),
    "weekday_short": lambda d: "%s %d %s %d" % (WEEKDAYS[d.weekday()][:3], d.day,
                                               MONTHS[d.month - 1][:3], d.year),
    "lower_month_day_year": lambda d: ("%s %d, %d" % (MONTHS[d.month - 1], d.day,
                                                      d.year)).lower(),
    "iso": lambda d: d.isoformat(),
    "european_dots": lambda d: "%02d.%02d.%d" % (d.day, d.month, d.year),
    "compact": lambda d: "%d%02d%02d" % (d.year, d.month, d.day),
    "us_slash_long": lambda d: "%d/%d/%d" % (d.month, d.day, d.year),
}

SOURCE_LENGTH = 32  # longest: "Wednesday, September 30, 2049" (29 characters)
TARGET_LENGTH = 11  # "YYYY-MM-DD" + </s>


def format_date(date, fmt):
    """`date` written in format `fmt` (a key of FORMATS)."""
    if fmt not in FORMATS:
        raise ValueError("unknown date format %r, expected one of %s" % (fmt, sorted(FORMATS)))
    return FORMATS[fmt](date)


def source_vocabulary():
    chars = set()
    for month in MONTHS + WEEKDAYS:
        chars.update(month)
        chars.update(month.lower())
    chars.update("0123456789 ,./-")
    return Vocabulary(sorted(chars))


def target_vocabulary():
    return Vocabulary(list("0123456789-"))


def make_dates(seed=0, n_train=20000, n_val=1000, n_test=1000, formats=None):
    """The dates task: a random human format of a date -> its ISO form.

    Splits hold different calendar dates (no date is in two splits), each written in one
    format drawn uniformly from `formats`.

    Args:
        seed: generator seed; the same seed gives the same data.
        n_train, n_val, n_test: examples per split (at most 29,219 in all).
        formats: names from FORMATS to use (default all).

    Returns:
        Task of kind "seq2seq": x = {"source": (N, 32), "target_in": (N, 11)},
        y = target_out (N, 11), weight = (N, 11) 1.0 on real target tokens;
        meta[split] has "source_text", "target_text" and "format" lists.

    Example:
        >>> task = make_dates(seed=0, n_train=100, n_val=10, n_test=10)
        >>> task.meta["test"]["source_text"][0], task.meta["test"]["target_text"][0]
        ('19.06.2035', '2035-06-19')
    """
    check_seed(seed)
    counts = split_counts(n_train, n_val, n_test)
    if isinstance(formats, str) or not (formats is None or isinstance(formats, (list, tuple))):
        # A single name would be read as its characters.
        raise ValueError("formats must be a list of format names (from %s), got %r"
                         % (sorted(FORMATS), formats))
    formats = sorted(FORMATS) if formats is None else list(formats)
    if not formats:
        raise ValueError("formats must name at least one format, got an empty list")
    for fmt in formats:
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise ValueError("formats: unknown date format %r, expected one of %s"
                             % (fmt, sorted(FORMATS)))
    total_days = (LAST_DATE - FIRST_DATE).days + 1
    if sum(counts.values()) > total_days:
        raise ValueError("n_train + n_val + n_test = %d exceeds the %d distinct dates"
                         % (sum(counts.values()), total_days))
    rng = np.random.default_rng(seed)
    offsets = rng.permutation(total_days)
    src_vocab, tgt_vocab = source_vocabulary(), target_vocabulary()
    splits, meta, start = {}, {}, 0
    for split in SPLITS:
        days = offsets[start:start + counts[split]]
        start += counts[split]
        fmt_ids = rng.integers(0, len(formats), size=len(days))
        dates = [FIRST_DATE + datetime.timedelta(days=int(d)) for d in days]
        sources = [format_date(d, formats[f]) for d, f in zip(dates, fmt_ids)]
        targets = [d.isoformat() for d in dates]
        splits[split] = seq2seq_arrays(
            [src_vocab.encode_text(s) for s in sources],
            [tgt_vocab.encode_text(t) for t in targets], SOURCE_LENGTH, TARGET_LENGTH)
        meta[split] = {"source_text": sources, "target_text": targets,
                       "format": [formats[f] for f in fmt_ids]}
    return Task("dates", "seq2seq", splits, src_vocab, tgt_vocab, meta=meta)


def seq2seq_arrays(sources, targets, source_length, target_length):
    """Padded arrays for teacher forcing: target_in = <s> + y, target_out = y + </s>."""
    bos, eos = Vocabulary.bos_id, Vocabulary.eos_id
    source = pad_batch(sources, source_length)
    target_in = pad_batch([[bos] + list(t) for t in targets], target_length)
    target_out = pad_batch([list(t) + [eos] for t in targets], target_length)
    return {"x": {"source": source, "target_in": target_in}, "y": target_out,
            "weight": (target_out != Vocabulary.pad_id).astype(np.float32)}
