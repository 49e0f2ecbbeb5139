"""trainer/devices.py: with libtpu installed and no TPU attached, JAX starts on the CPU without libtpu's errors."""

import os
import subprocess
import sys

import pytest

from trainer import devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("libtpu")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "TPU_", "XLA_"))}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_plain_cpu_start_stays_quiet_with_libtpu_installed():
    out = _run("import trainer, jax; print(jax.devices()[0].platform)")
    assert out.returncode == 0 and out.stdout.strip() == "cpu"
    assert "TPU" not in out.stderr and "E0000" not in out.stderr, out.stderr[-2000:]
    assert not devices.tpu_attached()
