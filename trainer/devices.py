"""Which accelerator this machine has, and a quiet JAX start where libtpu is installed but no TPU is.

`jax[tpu]` brings libtpu (the planner compiles for TPU topologies with it, trainer/plan/). The price: on
a machine without a TPU a plain start of JAX loads libtpu and prints initialisation errors;
`quiet_start()` (called when the trainer package is imported) keeps JAX off a TPU backend that is not
there. No JAX import here: this runs before JAX starts.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys


def tpu_attached() -> bool:
    """A TPU chip on this machine's PCI bus (Google's vendor id), as JAX's own hardware check looks."""
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == "0x1ae0":
                    return True
        except OSError:
            continue
    return False


def quiet_start() -> None:
    """Where libtpu is installed but no TPU is attached (a CPU or GPU machine with `jax[tpu]` for
    planning), list the platforms JAX may start, without TPU. Leaves an explicit JAX_PLATFORMS alone."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None or tpu_attached():
        return
    cuda = any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
    platforms = "cuda,cpu" if cuda and glob.glob("/dev/nvidia[0-9]*") else "cpu"
    os.environ["JAX_PLATFORMS"] = platforms
    if "jax" in sys.modules:  # imported before us: set the config too (read when backends start)
        sys.modules["jax"].config.update("jax_platforms", platforms)
