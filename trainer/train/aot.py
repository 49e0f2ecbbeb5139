"""The train step compiled ahead of time for given batch shapes, on any devices: the run's own (the
preflight, trainer/train/preflight.py) or a TPU slice's as the compiler sees it (the planner,
trainer/plan/). Per shape and device: the bytes of arguments, outputs and temporaries, whether they fit
a budget, compile seconds and the compiler's FLOPs; `cache`: compiled programs' figures kept by
`program_key`, so a planner run does not compile a program again. Nothing is materialised: the state and batch are
abstract (ShapeDtypeStructs with their shardings), so roberta-large compiles on a laptop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Any, Sequence

from trainer.config import TrainConfig

GIB = 1024**3


# ------------------------------------------------------------------------------------- abstract inputs


def abstract_state(model: Any, cfg: TrainConfig, mesh: Any) -> Any:
    """The TrainState as ShapeDtypeStructs with its shardings (memory plan included): no parameters
    are materialised, so roberta-large plans on a laptop."""
    import jax
    import jax.numpy as jnp

    from trainer.train.train_step import create_train_state, train_state_sharding

    ids = jnp.ones((1, 8), jnp.int32)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, ids)["params"])
    state = jax.eval_shape(lambda p: create_train_state(p, cfg), params)
    shardings = train_state_sharding(state, cfg, mesh)
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def abstract_batch(shape: Any, cfg: TrainConfig, mesh: Any) -> dict:
    """The global batch of a `shapes.Shape` (trainer/data/shapes.py) as ShapeDtypeStructs sharded on `data`."""
    import jax
    import jax.numpy as jnp

    from trainer.data.packing import PACKED_KEYS, PACKED_SOURCE
    from trainer.data.padding import ID_KEYS
    from trainer.mesh import batch_sharding, data_shards

    sharding = batch_sharding(mesh)
    columns = ID_KEYS if shape.kind == "triplet" else ID_KEYS[:2]

    def spec(*dims):
        return jax.ShapeDtypeStruct(dims, jnp.int32, sharding=sharding)

    B = cfg.batch_size
    batch = {f"{c}_fp": spec(B) for c in columns}
    if shape.packed:
        batch.update({k: spec(data_shards(mesh), shape.rows, shape.length) for k in PACKED_KEYS})
        if cfg.pack_even_cores:  # the packer dealt the texts: each slot's text
            batch[PACKED_SOURCE] = spec(data_shards(mesh), len(columns) * B // data_shards(mesh))
    else:
        for c in columns:
            batch[f"{c}_ids"] = batch[f"{c}_mask"] = spec(B, shape.length)
    return batch


# ------------------------------------------------------------------------------------- compile


@dataclasses.dataclass
class ShapeReport:
    """Per device: bytes of the compiled step for one batch shape."""

    shape: Any
    case: str  # "worst" | "typical"
    usable_bytes: int
    argument_bytes: int = 0
    output_bytes: int = 0
    temp_bytes: int = 0
    alias_bytes: int = 0
    compile_s: float = 0.0
    flops: float | None = None  # compiler's, per device (a while loop's body counted once)
    bytes_accessed: float | None = None
    error: str | None = None
    cached: bool = False  # figures from compile_shapes' cache, not compiled by this call
    remat: str = "none"  # the program's remat mode (cfg.remat, or auto's choice: memory.RematPlan)

    @property
    def total_bytes(self) -> int:
        # Donated state: the outputs reuse the arguments' buffers (alias), counted once.
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def fits(self) -> bool:
        return self.error is None and self.total_bytes <= self.usable_bytes

    def to_json(self) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "shape"}
        d.update(shape=self.shape.label, total_bytes=self.total_bytes, fits=self.fits)
        return d


_NEEDS = re.compile(r"required for HLO temporaries \(([0-9.]+)([KMGT]?)\)")


_CACHED = (
    "argument_bytes",
    "output_bytes",
    "temp_bytes",
    "alias_bytes",
    "compile_s",
    "flops",
    "bytes_accessed",
    "error",
)


def program_key(lowered: Any, mesh: Any) -> str:
    """What a compile's figures are a function of: the program (StableHLO without source locations, so
    an edit elsewhere in a file keeps the key), the devices it is compiled for and the compiler's version."""
    import hashlib

    import jax

    d = mesh.devices.flat[0]
    text = "\n".join(
        (
            lowered.as_text(),
            str(mesh.devices.shape),
            getattr(d, "device_kind", d.platform),
            jax.__version__,
            _libtpu_version(),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _libtpu_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("libtpu")
    except metadata.PackageNotFoundError:
        return ""


def _read_cache(path: str | None) -> dict:
    out = {}
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    entry = json.loads(line)
                    out[entry["key"]] = entry
    return out


def compile_shapes(
    model: Any,
    cfg: TrainConfig,
    mesh: Any,
    shapes: Sequence[tuple[str, Any]],
    usable_bytes: int,
    state: Any = None,
    jobs: int = 1,
    cache: str | None = None,
    on_report=None,
    compile_missing: bool = True,
) -> list[ShapeReport]:
    """Lower the train step for each (case, shape) on `mesh` (real devices or a TPU topology's), then
    compile them, `jobs` at a time (XLA compiles outside the GIL: 2 cores, half the wait). `state`:
    the train state, abstract or concrete (default: `abstract_state`). `cache`: a JSON-lines file of
    earlier compiles' figures by `program_key`; a program found there is not compiled again (the same
    program on the same devices and compiler gives the same figures), each new one is appended as it
    finishes (a long planner run that stops keeps what it compiled). `on_report(report)`: called as each
    program finishes.
    `compile_missing=False`: programs not in the cache are left out of the result (nothing compiles)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import jax

    from trainer.train.memory import remat_plan
    from trainer.train.train_step import make_train_step

    # A concrete state (the preflight's) compiles as its shapes, dtypes and shardings.
    state = (
        abstract_state(model, cfg, mesh)
        if state is None
        else jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    )
    step = make_train_step(model, cfg, mesh, state_sharding=jax_shardings(state), memory_budget=usable_bytes)
    lowered = [step.lower(state, abstract_batch(shape, cfg, mesh)) for _, shape in shapes]
    plan = remat_plan(cfg, model.config, state, jax_shardings(state), usable_bytes)
    cached = _read_cache(cache)
    lock = threading.Lock()

    def run(i: int) -> ShapeReport | None:
        case, shape = shapes[i]
        key = program_key(lowered[i], mesh) if cache else ""
        if key in cached:
            report = ShapeReport(shape, case, usable_bytes, cached=True)
            for k in _CACHED:
                setattr(report, k, cached[key][k])
        elif not compile_missing:
            return None
        else:
            report = _compile_one(lowered[i], case, shape, usable_bytes, state)
            if cache:
                with lock, open(cache, "a", encoding="utf-8") as f:
                    f.write(
                        json.dumps({"key": key, "shape": shape.label, **{k: getattr(report, k) for k in _CACHED}})
                        + "\n"
                    )
        report.remat = plan.for_shape(shape)
        if on_report is not None:
            on_report(report)
        return report

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return [r for r in pool.map(run, range(len(shapes))) if r is not None]


def _compile_one(lowered: Any, case: str, shape: Any, usable_bytes: int, state: Any) -> ShapeReport:
    """Compile one lowered step; its memory and cost figures (or the compiler's out-of-memory answer)."""
    report = ShapeReport(shape, case, usable_bytes)
    t0 = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as e:  # noqa: BLE001 -- XlaRuntimeError: the compiler refused (out of memory)
        report.compile_s = time.perf_counter() - t0
        m = _NEEDS.search(str(e))
        if not m:
            raise
        report.temp_bytes = int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))
        report.argument_bytes = _state_bytes(state)
        report.error = str(e).split("\n")[0][:300]
        return report
    report.compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    report.argument_bytes = int(mem.argument_size_in_bytes)
    report.output_bytes = int(mem.output_size_in_bytes)
    report.temp_bytes = int(mem.temp_size_in_bytes)
    report.alias_bytes = int(mem.alias_size_in_bytes)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost:
        report.flops = float(cost.get("flops", 0.0)) or None
        report.bytes_accessed = float(cost.get("bytes accessed", 0.0)) or None
    return report


def jax_shardings(abstract: Any) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda x: x.sharding, abstract)


def _state_bytes(state: Any) -> int:
    from trainer.train.memory import state_bytes_per_device

    return state_bytes_per_device(state, jax_shardings(state))
