"""What the hosts of a multi-host run agree on, each with one collective: batch shapes and the data
position to checkpoint. With one host both are the identity.

Every host builds its batches from its own files (trainer/data/batches.py), so each picks its own
bucket length (and, packed, its own row count); one compiled program needs one global shape, so
every host grows its arrays to the largest any host has (trainer/data/shapes.py `agree_on_shape`,
with `max_over_hosts`).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from pipeline.user_errors import UserError

_STATE_BYTES = 1 << 16  # room for one host's data position (about 1 KB of JSON) when gathered


def max_over_hosts(values) -> np.ndarray:
    """The elementwise max over hosts of a few ints."""
    return np.max(multihost_utils.process_allgather(np.asarray(values, np.int32)), axis=0)


def gather_data_state(host_state: dict) -> dict:
    """The data position to checkpoint: this host's, or with several hosts all of them by process
    index (each host reads its own shards, so each resumes from its own entry)."""
    if jax.process_count() == 1:
        return host_state
    raw = json.dumps(host_state).encode()
    if len(raw) > _STATE_BYTES:
        raise ValueError(f"data position of {len(raw)} bytes exceeds {_STATE_BYTES}")
    buf = np.zeros(_STATE_BYTES, np.uint8)
    buf[: len(raw)] = np.frombuffer(raw, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buf))
    return merge_states([json.loads(bytes(row).rstrip(b"\0")) for row in gathered])


def merge_states(host_states: Sequence[Mapping[str, Any]]) -> dict:
    """One checkpointable position for a multi-host run: every host's `state()`, by process index.
    Each host resumes from its own entry when given the merged dict as `state=`."""
    hosts = sorted((dict(s) for s in host_states), key=lambda s: s["process_index"])
    if [s["process_index"] for s in hosts] != list(range(len(hosts))):
        raise UserError("merge_states needs exactly one state per host, process indices 0..P-1")
    if len({s["step"] for s in hosts}) != 1:
        raise UserError(f"hosts are at different steps: {[s['step'] for s in hosts]}")
    return {"hosts": hosts}
