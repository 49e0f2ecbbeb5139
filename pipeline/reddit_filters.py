"""PolyAI's Reddit rules, re-implemented: which comments may be a context or a response, how long texts
are cut, and the deterministic train / test split by thread.

The rules and their defaults come from PolyAI's conversational-datasets `reddit/create_data.py`
(github:PolyAI-LDN/conversational-datasets); docs/reddit.md says where each one is in that file.
Standard library only, so the Beam DoFns and the tests share one definition.
"""

from __future__ import annotations

import dataclasses
import hashlib

# Bodies Reddit writes in place of a comment's text once it is gone (PolyAI's `_should_skip`).
DELETED_BODY = "[deleted]"
REMOVED_BODY = "[removed]"

# Why a comment may not be a context or a response; the order is PolyAI's `_should_skip` order, so a
# comment that fails several rules is counted once, under the first.
TOO_LONG = "too_long"
DELETED = "deleted"
REMOVED = "removed"
TOO_SHORT = "too_short"
FILTER_REASONS = (TOO_LONG, DELETED, REMOVED, TOO_SHORT)

SPLITS = ("all", "train", "test")


@dataclasses.dataclass(frozen=True)
class RedditOptions:
    """The Reddit source's settings; PolyAI's defaults unless said otherwise."""

    # A comment longer than this many characters is neither context nor response; extra contexts are
    # cut to it without splitting a word (PolyAI --max_length=127).
    max_length: int = 127
    # A comment shorter than this is neither context nor response (PolyAI --min_length=9).
    min_length: int = 9
    # Extra context turns kept per pair, "context/0" (the grandparent) upwards. PolyAI keeps up to
    # parent_depth - 1 = 9 (--parent_depth=10); 0 here because training reads context and response only.
    extra_contexts: int = 0
    # Which of PolyAI's thread splits to write: "all" (what the 2021 run's 726M pairs match: PolyAI's
    # train + test, 727M), "train" or "test".
    split: str = "all"
    # PolyAI's split: md5 of the thread id into `split_buckets` buckets, train below this fraction.
    train_fraction: float = 0.9
    split_buckets: int = 4096
    # Ours, not PolyAI's: a longer line is rejected unread (the job's --max_line_bytes default).
    max_line_bytes: int = 1 << 20
    # Ours: a BigQuery table ("project:dataset.table" or "project.dataset.table") read instead of, or as
    # well as, the files (Dataflow; PolyAI read only BigQuery).
    bigquery_table: str = ""

    def __post_init__(self):
        if not 0 < self.min_length <= self.max_length:
            raise ValueError(f"need 0 < min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.extra_contexts < 0:
            raise ValueError(f"extra_contexts must be >= 0, got {self.extra_contexts}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if not 0.0 < self.train_fraction <= 1.0 or self.split_buckets < 1:
            raise ValueError("need 0 < train_fraction <= 1 and split_buckets >= 1")
        if self.max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, got {self.max_line_bytes}")


def normalise_id(raw_id: str) -> str:
    """A Reddit id without its kind prefix ("t1_abc" -> "abc"), as PolyAI keys comments and threads."""
    # Slicing, not the regex, on every comment: a third of the parse time otherwise.
    if raw_id[2:3] == "_" and raw_id[:1] == "t" and raw_id[1:2].isdigit():
        return raw_id[3:]
    return raw_id


def trim(text: str, max_length: int) -> str:
    """`text` cut to at most `max_length` characters at a word boundary: the cut falls at the last
    place within reach where an alphanumeric and a non-alphanumeric character meet ("" if none)."""
    if len(text) <= max_length:
        return text
    for k in range(max_length, 0, -1):
        if text[k].isalnum() != text[k - 1].isalnum():
            return text[:k]
    return ""


def drop_reason(body: str, options: RedditOptions) -> str:
    """Why a comment with this body may not be a context or a response; "" when it may."""
    if len(body) > options.max_length:
        return TOO_LONG
    if body == DELETED_BODY:
        return DELETED
    if body == REMOVED_BODY:
        return REMOVED
    if len(body) < options.min_length:
        return TOO_SHORT
    return ""


def thread_split(thread_id: str, options: RedditOptions) -> str:
    """PolyAI's split of a thread (normalised link id): "train" or "test", the same in every run."""
    digest = int(hashlib.md5(thread_id.encode("utf-8")).hexdigest(), 16)
    value = (1 + digest % options.split_buckets) / options.split_buckets
    return "train" if value < options.train_fraction else "test"
