"""The encoder: Flax modules, Hugging Face checkpoints in and out, pooling, encoding, the export."""
