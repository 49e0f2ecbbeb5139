"""Mesh, batch layout checks, process-local batch assembly, and two real processes (gloo
collectives, 2 CPU devices each) training like one process with 4 devices."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests._xla import cpu_devices_env
from trainer.mesh import BatchLayoutError, check_batch_layout, create_mesh, layout_report, shard_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPLIT = textwrap.dedent("""
    import json, sys
    import jax
    from trainer.mesh import split_cpu_into_devices
    got = split_cpu_into_devices(int(sys.argv[1]))
    if sys.argv[2] == "again":  # JAX already running: nothing changes
        jax.devices()
        got = [got, split_cpu_into_devices(int(sys.argv[1]) + 1)]
    print(json.dumps({"returned": got, "devices": [d.platform for d in jax.devices()]}))
""")


@pytest.mark.parametrize(
    "count,xla_flags,extra,returned,devices",
    [
        (3, None, "", 3, 3),
        (0, None, "", os.cpu_count(), os.cpu_count()),  # one per core
        (3, "--xla_force_host_platform_device_count=2", "", None, 2),  # XLA_FLAGS wins
        (3, None, "again", [3, None], 3),
    ],
)
def test_split_cpu_into_devices(count, xla_flags, extra, returned, devices):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", **({"XLA_FLAGS": xla_flags} if xla_flags else {}))
    out = subprocess.run(
        [sys.executable, "-c", SPLIT, str(count), extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"returned": returned, "devices": ["cpu"] * devices}


def test_single_device_layout_and_shard_batch():
    mesh = create_mesh()
    assert mesh.axis_names == ("data",)
    batch = shard_batch({"anchor_ids": np.arange(12).reshape(4, 3).astype(np.int32)}, mesh)
    np.testing.assert_array_equal(np.asarray(batch["anchor_ids"]), np.arange(12).reshape(4, 3))
    assert "global batch 32" in layout_report(32, mesh, 8)
    with pytest.raises(BatchLayoutError, match="--grad_cache_chunk=5 does not divide --batch_size=32"):
        check_batch_layout(32, mesh, 5)


WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from trainer.mesh import initialize_distributed
    nproc, pid, addr, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if nproc > 1:
        assert initialize_distributed(addr, nproc, pid)
    import jax
    from tests._tiny import random_batch, tiny_model
    from trainer.config import TrainConfig
    from trainer.mesh import check_batch_layout, create_mesh, layout_report, local_batch_size, shard_batch
    from trainer.train.train_step import create_train_state, make_train_step
    assert jax.device_count() == 4 and jax.process_count() == nproc
    mesh = create_mesh()
    report = layout_report(16, mesh, 8)
    try:
        check_batch_layout(18, mesh)
        err = None
    except ValueError as e:
        err = str(e)
    model, params = tiny_model()
    cfg = TrainConfig(learning_rate=1e-3, warmup_steps=1, train_steps=10, seed=5)
    step = make_train_step(model, cfg, mesh)
    state = create_train_state(params, cfg, mesh)
    n = local_batch_size(16)
    losses = []
    for i, triplet in enumerate((False, True)):
        full = random_batch(40 + i, batch=16, triplet=triplet)   # every host builds the same global batch
        local = {k: v[pid * n:(pid + 1) * n] for k, v in full.items()}  # ...and feeds only its rows
        state, m = step(state, shard_batch(local, mesh))
        losses.append(float(m["loss"]))
    flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(state.params)])
    with open(out_path, "w") as f:
        json.dump({"losses": losses, "params": flat.tolist(), "report": report, "err": err}, f)
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# Slow: two JAX processes for ~2 min on 2 cores; tests/test_multihost_training.py (slow) trains and resumes on two
@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices(tmp_path):
    addr = f"localhost:{_free_port()}"
    env1 = cpu_devices_env(4)
    env2 = cpu_devices_env(2)
    # Output to files, not pipes: a full pipe would block one host while the other waits for it.
    logs = [open(tmp_path / f"log{i}.txt", "w") for i in range(3)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, "2", str(i), addr, str(tmp_path / f"two{i}.json")],
            cwd=ROOT,
            env=env2,
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    procs.append(
        subprocess.Popen(
            [sys.executable, "-c", WORKER, "1", "0", "", str(tmp_path / "one.json")],
            cwd=ROOT,
            env=env1,
            stdout=logs[2],
            stderr=subprocess.STDOUT,
        )
    )
    for i, p in enumerate(procs):
        rc = p.wait(timeout=900)
        logs[i].close()
        assert rc == 0, (tmp_path / f"log{i}.txt").read_text()[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = [json.loads((tmp_path / f"two{i}.json").read_text()) for i in range(2)]
    assert "1 host(s) x 16 = 4 device(s) x 4" in one["report"]
    assert "2 host(s) x 8 = 4 device(s) x 4" in two[0]["report"]
    assert "does not divide over 4 devices" in two[0]["err"]
    for t in two:  # both hosts hold the same replicated state, equal to the single process's
        np.testing.assert_allclose(t["losses"], one["losses"], rtol=1e-5)
        np.testing.assert_allclose(t["params"], one["params"], rtol=1e-4, atol=1e-6)
