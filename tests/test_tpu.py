"""TPU slices as the compiler sees them (libtpu, no TPU needed); the quiet CPU start: tests/test_devices.py."""

import os
import subprocess
import sys

import pytest

from trainer.plan import tpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("libtpu")


def _run(code: str, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "TPU_", "XLA_"))}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=dict(e, **env), capture_output=True, text=True, timeout=300
    )


def test_slices_compile_offline_with_their_usable_hbm():
    """Every slice's devices come from libtpu on this CPU machine, and the compiler states the HBM it
    can use (a little under the public figure)."""
    out = _run(
        "from trainer.plan import tpu\n"
        "tpu.prepare_offline_compile('v3-8')\n"
        "for s in tpu.SLICES.values():\n"
        "    d = tpu.topology_devices(s)\n"
        "    print(s.name, len(d), len({x.process_index for x in d}), tpu.usable_hbm_bytes(d[0]))\n"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in out.stdout.splitlines()}
    for name, (devices, hosts, usable) in got.items():
        s = tpu.SLICES[name]
        assert (devices, hosts) == (s.devices, s.hosts)
        assert 0.9 * s.hbm_gib * 2**30 < usable <= s.hbm_gib * 2**30 * 1.01, name
    assert got["v3-8"][2] == pytest.approx(15.48 * 2**30, rel=1e-3)  # the figure in the compiler's OOM message
    assert "INVALID_ARGUMENT" not in out.stderr and "libtpu" not in out.stderr


def test_unknown_slice_is_refused():
    with pytest.raises(ValueError, match="unknown TPU slice 'v9-8'; choose one of v3-8"):
        tpu.get_slice("v9-8")
