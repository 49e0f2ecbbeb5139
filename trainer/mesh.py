"""The device mesh, batch sharding and multi-host set-up (no TensorFlow).

One mesh axis, `data`: parameters and optimizer state are replicated, every batch column is split
along its first (batch) axis. On many hosts each process feeds its own rows (its share of the global
batch, read from its own file shards) and `make_array_from_process_local_data` assembles the global
array; process p's rows are global rows [p * B / P, (p + 1) * B / P) because the mesh lists devices
in process order.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pipeline.user_errors import UserError
from trainer.devices import tpu_attached

DATA_AXIS = "data"
log = logging.getLogger(__name__)


class BatchLayoutError(UserError):
    """The global batch (or the gradient-caching chunk) does not split evenly over the devices or hosts."""


def split_cpu_into_devices(count: int = 0) -> int | None:
    """Make JAX's CPU backend `count` devices (0: one per core), unless XLA_FLAGS already sets a count
    (--xla_force_host_platform_device_count: the user's, or a test's, choice wins). Returns the count
    set, or None (also when JAX is already running in this process, e.g. called from Python after
    other JAX work: its devices stay as they are). Accelerators are not affected.

    Why: XLA's CPU code runs a program's matmuls on all cores but much of the rest (attention's
    softmax, layer norms, GELU) on one thread per device; with one device per core and the batch
    split over them, that work runs in parallel too (bench/bench_mine.py --cpu_devices).
    """
    from jax._src.xla_bridge import backends_are_initialized  # no public form in JAX 0.10

    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    count = count or os.cpu_count() or 1
    if backends_are_initialized():
        if count != jax.config.jax_num_cpu_devices:
            log.info("JAX is already running: %d CPU device(s) kept (not %d)", len(jax.devices("cpu")), count)
        return None
    jax.config.update("jax_num_cpu_devices", count)
    return count


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str = "gloo",
) -> bool:
    """Start `jax.distributed` when the run spans several processes; returns whether it did.

    From flags when `coordinator_address` is given (GPU clusters, CPU tests); automatically on
    multi-host TPU slices (TPU_WORKER_HOSTNAMES, or a TPU attached and JAX's cluster detection
    succeeding), where JAX finds the coordinator itself. Must run before anything touches a JAX backend.
    """
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise UserError("--coordinator_address needs --num_processes and --process_id")
        if num_processes > 1 and cpu_collectives:
            # CPU backends need a collectives implementation for cross-process all-reduce.
            jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
        )
        return True
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) > 1:
        jax.distributed.initialize()
        return True
    if tpu_attached():
        # A TPU VM without that variable: JAX's own cluster detection (GCE metadata) finds pod
        # slices; on a single host it either succeeds with one process or refuses, both fine.
        # (Not merely libtpu installed: the planner installs it on machines without TPUs.)
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as e:
            log.info("jax.distributed not started (single host): %s", e)
            return False
        return jax.process_count() > 1
    return False


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D `data` mesh over all devices (of all processes), ordered by process then device id."""
    devices = list(devices if devices is not None else jax.devices())
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (DATA_AXIS,))


def local_mesh() -> Mesh:
    """The mesh of this process's devices (what encoding on one host splits its batches over)."""
    return create_mesh(jax.local_devices())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_shards(mesh: Mesh) -> int:
    return int(mesh.shape[DATA_AXIS])


def check_batch_layout(global_batch: int, mesh: Mesh, grad_cache_chunk: int = 0) -> None:
    """Raise BatchLayoutError, with the numbers and the flag, when the batch does not split evenly."""
    n_dev, n_proc = data_shards(mesh), jax.process_count()
    if global_batch <= 0 or global_batch % n_dev:
        raise BatchLayoutError(
            f"--batch_size={global_batch}: the global batch does not divide over {n_dev} "
            f"devices; use a multiple of {n_dev}"
        )
    if global_batch % n_proc:
        raise BatchLayoutError(
            f"--batch_size={global_batch}: the global batch does not divide over {n_proc} "
            f"hosts; use a multiple of {n_proc}"
        )
    if grad_cache_chunk:
        if global_batch % grad_cache_chunk:
            raise BatchLayoutError(f"--grad_cache_chunk={grad_cache_chunk} does not divide --batch_size={global_batch}")
        if grad_cache_chunk % n_dev:
            raise BatchLayoutError(
                f"--grad_cache_chunk={grad_cache_chunk} does not divide over {n_dev} devices; use a multiple of {n_dev}"
            )


def local_batch_size(global_batch: int) -> int:
    """Rows this process feeds per step."""
    return global_batch // jax.process_count()


def layout_report(global_batch: int, mesh: Mesh, grad_cache_chunk: int = 0) -> str:
    """One line for the start-up log: global, per-host and per-device batch, chunking, hosts."""
    check_batch_layout(global_batch, mesh, grad_cache_chunk)
    n_dev = data_shards(mesh)
    chunk = (
        f"gradient caching in chunks of {grad_cache_chunk} texts ({grad_cache_chunk // n_dev} per device)"
        if grad_cache_chunk
        else "no gradient caching"
    )
    return (
        f"global batch {global_batch} = {jax.process_count()} host(s) x {local_batch_size(global_batch)} "
        f"= {n_dev} device(s) x {global_batch // n_dev} ({jax.devices()[0].platform}); {chunk}"
    )


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of every column -> global arrays sharded on `data` along axis 0."""
    sharding = batch_sharding(mesh)
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        global_shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
        out[k] = jax.make_array_from_process_local_data(sharding, v, global_shape)
    return out
