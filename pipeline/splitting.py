"""Train/validation split by a stable hash of the raw line.

The same line goes to the same split in every run, on every machine and worker (blake2b, not
Python's salted hash()), and identical lines never straddle the two splits.
"""

from __future__ import annotations

import hashlib

TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)

_SCALE = float(1 << 64)


def split_of(raw_line: bytes, validation_fraction: float) -> str:
    if validation_fraction <= 0.0:
        return TRAIN
    h = int.from_bytes(hashlib.blake2b(raw_line, digest_size=8).digest(), "little")
    return VALIDATION if h / _SCALE < validation_fraction else TRAIN
