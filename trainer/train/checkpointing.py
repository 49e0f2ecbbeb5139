"""Orbax checkpoints of the train state, the data pipeline's position and the run's metadata.

Layout: <workdir>/checkpoints/<step>/{state,data,meta}. `state` is the TrainState pytree, `data` the
input pipeline's small JSON position (so resume continues with the very next batch), `meta` the
configuration and model description needed to export from a workdir alone. TensorFlow-free.
"""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp

from pipeline import storage


def checkpoint_dir(workdir: str) -> str:
    return storage.abspath(storage.join(workdir, "checkpoints"))


class Checkpointer:
    """Saves every `every` steps (and on demand), keeps the last `keep`; saving is async."""

    def __init__(self, workdir: str, keep: int = 3):
        self._manager = ocp.CheckpointManager(
            checkpoint_dir(workdir),
            item_names=("state", "data", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict, meta: dict, force: bool = True) -> bool:
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=force,
        )
        return bool(saved)

    def restore(self, state_template: Any, step: int | None = None) -> tuple[Any, dict, dict]:
        """Restores into the template's structure, shapes and shardings; returns (state, data, meta)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError("no checkpoint to restore")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_template)
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return out["state"], dict(out["data"]), dict(out["meta"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def restore_latest_params(workdir: str) -> tuple[Any, dict]:
    """The parameters and metadata of a workdir's latest checkpoint, without a state template
    (used by the exporter). Parameters come back as host numpy arrays."""
    manager = ocp.CheckpointManager(checkpoint_dir(workdir), item_names=("state", "data", "meta"))
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {checkpoint_dir(workdir)}")
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    manager.close()
    state = out["state"]
    params = state["params"] if isinstance(state, dict) else state.params
    meta = dict(out["meta"])
    meta.setdefault("step", step)
    return params, meta
