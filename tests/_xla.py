"""XLA settings of the test processes.

LLVM's optimisation of XLA's CPU code is much of the compile time of the tests' many small programs,
and the tests check numbers, not speed: they compile at level 0 (the suite's test time 785 -> 666 s
on 2 cores, BENCHMARKS.md). XLA fixes the operations and their order before LLVM runs, so the
arithmetic is the same up to code generation's last bits (such as fused multiply-adds); every test
passes at both levels with its own tolerance. Benchmarks and real runs keep XLA's default."""

import os

FAST_COMPILE = "--xla_backend_optimization_level=0"


def cpu_devices_env(devices: int, **extra: str) -> dict:
    """The environment of a subprocess with `devices` virtual CPU devices (XLA reads the flag at start)."""
    return dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}",
        JAX_PLATFORMS="cpu",
        **extra,
    )
