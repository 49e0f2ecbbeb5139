"""TensorFlow's log level, set before TensorFlow starts (train_main.py, mine_main.py)."""

from __future__ import annotations

import ctypes
import os


def cuda_driver_installed() -> bool:
    """Whether TensorFlow could start CUDA here: it loads the driver by this name."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def quiet_tensorflow() -> None:
    """TensorFlow's C++ log level for a run, unless the user set one (call before importing TensorFlow).

    TensorFlow's start-up chatter hides our log: its C++ log shows errors only. And TensorFlow (the input
    pipeline's tf.data, on the CPU) probes CUDA when its runtime starts: with no driver (every CPU
    machine) it logs `failed call to cuInit: ... CUDA error` as an error, and no option skips the probe.
    Without a driver it can start no GPU, so there it logs fatal errors only (its failures reach us as
    Python exceptions anyway); with one, errors as before. JAX's devices are untouched either way.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if cuda_driver_installed() else "3")
