"""The JAX/Flax trainer. Importing it keeps JAX off an absent TPU when libtpu is installed (trainer/devices.py)."""

from trainer.devices import quiet_start as _quiet_start

_quiet_start()
