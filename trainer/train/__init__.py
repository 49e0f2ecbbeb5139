"""The training step and the run around it: loss, gradient cache, optimizer, loop, checkpoints, metrics."""
