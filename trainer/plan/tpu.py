"""TPU slices as the compiler sees them, for planning a run on a machine without TPUs.

`jax[tpu]` brings libtpu, which also compiles for TPU topologies on a machine without TPUs
(`jax.experimental.topologies`): the planner (trainer/plan/projection.py) compiles the real step
(trainer/train/aot.py) for a slice that way. On such a machine JAX itself stays off the absent TPU
(trainer/devices.py `quiet_start`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
from typing import Any


@dataclasses.dataclass(frozen=True)
class Slice:
    """A TPU slice by its user-facing name, with public chip figures (per JAX device)."""

    name: str  # as Cloud TPU names it: v3-8
    topology: str  # jax.experimental.topologies name: v3:2x2
    chip_config: str  # "default" or "megacore" (v4 / v5p: one JAX device per chip, both cores)
    chips_per_host: tuple[int, int, int]
    devices: int
    hosts: int
    hbm_gib: float  # public HBM per device; the compiler's usable figure is a little less
    peak_tflops: float  # bfloat16 dense peak per device
    hbm_gbps: float  # HBM bandwidth per device, GB/s

    @property
    def accelerator_type(self) -> str:
        return self.name


# Public figures (../shared/reference/tpu.md; Cloud TPU system architecture pages). A v3 chip is two
# cores, each its own JAX device: 123 TFLOP/s, 32 GiB and 900 GB/s per chip are halved per device.
SLICES = {
    s.name: s
    for s in (
        Slice("v3-8", "v3:2x2", "default", (2, 2, 1), 8, 1, 16.0, 61.5, 450.0),
        Slice("v3-32", "v3:4x4", "default", (2, 2, 1), 32, 4, 16.0, 61.5, 450.0),
        Slice("v4-8", "v4:2x2x1", "megacore", (2, 2, 1), 4, 1, 32.0, 275.0, 1228.0),
        Slice("v5litepod-8", "v5e:2x4", "default", (2, 4, 1), 8, 1, 16.0, 197.0, 819.0),
        Slice("v5p-8", "v5p:2x2x1", "megacore", (2, 2, 1), 4, 1, 95.0, 459.0, 2765.0),
    )
}


def get_slice(name: str) -> Slice:
    if name not in SLICES:
        raise ValueError(f"unknown TPU slice {name!r}; choose one of {', '.join(SLICES)}")
    return SLICES[name]


def prepare_offline_compile(accelerator_type: str) -> None:
    """Environment for compiling TPU programs on a machine without TPUs: JAX itself on the CPU, and
    libtpu told the slice and the host, so it does not query cloud metadata or print errors."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", accelerator_type)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # Compiling needs no chip: let several planners (or a planner beside a test) load libtpu at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", "cpu")


def topology_devices(s: Slice) -> list[Any]:
    """The slice's devices (all hosts) to compile for; needs libtpu (`pip install 'jax[tpu]'`)."""
    if importlib.util.find_spec("libtpu") is None:
        raise RuntimeError(
            "compiling for a TPU topology needs libtpu: pip install 'jax[tpu]==0.10.2' (or the project's [tpu] extra)"
        )
    from jax.experimental import topologies

    topo = topologies.get_topology_desc(
        topology_name=s.topology, platform="tpu", chip_config_name=s.chip_config, chips_per_host_bounds=s.chips_per_host
    )
    return list(topo.devices)


_AVAILABLE = re.compile(r"available HBM \(([0-9.]+)([KMGT]?)\)")


def usable_hbm_bytes(device: Any) -> int:
    """The compiler's usable HBM per device: it answers a program that cannot fit with the figure
    ("exceeds available HBM (15.48G)" on a v3 core); a second of compile time."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    sharding = NamedSharding(Mesh(np.array([device]), ("x",)), P())
    too_big = jax.jit(lambda x: jnp.zeros((1 << 40,), jnp.uint8) + x, out_shardings=sharding)
    try:
        too_big.lower(jax.ShapeDtypeStruct((), jnp.uint8, sharding=sharding)).compile()
    except Exception as e:  # noqa: BLE001 -- XlaRuntimeError; only its message matters
        m = _AVAILABLE.search(str(e))
        if m:
            return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))
        raise
    raise RuntimeError("a 1 TiB program compiled: cannot read the usable HBM from the compiler")
