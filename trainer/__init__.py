"""The JAX/Flax trainer. Importing it keeps JAX off an absent TPU when libtpu is installed (trainer/plan/tpu.py)."""
from trainer.plan.tpu import quiet_start as _quiet_start

_quiet_start()
