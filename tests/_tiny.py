"""Shared tiny fixtures for the train-step tests: a small random encoder and random batches."""
import jax
import jax.numpy as jnp
import numpy as np

from trainer.modeling import EncoderConfig, SentenceEncoder

TINY = EncoderConfig(vocab_size=97, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)


def tiny_model(dtype=jnp.float32, config=TINY):
    model = SentenceEncoder(config, dtype)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((2, 8), jnp.int32), jnp.ones((2, 8), jnp.int32))["params"]
    return model, params


def random_batch(seed, batch=16, length=12, triplet=False, vocab=97, duplicates=True):
    rng = np.random.default_rng(seed)
    out = {}
    cols = ("anchor", "positive", "negative") if triplet else ("anchor", "positive")
    for k, col in enumerate(cols):
        lengths = rng.integers(3, length + 1, size=batch)
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
        ids = rng.integers(5, vocab, size=(batch, length)).astype(np.int32) * mask
        ids[:, 0] = 2  # a CLS-like first token
        out[f"{col}_ids"], out[f"{col}_mask"] = ids, mask
        out[f"{col}_fp"] = (np.arange(batch) + 1000 * k).astype(np.int32)
    if duplicates:  # one planted duplicate positive, so masking is exercised
        out["positive_ids"][3] = out["positive_ids"][5]
        out["positive_mask"][3] = out["positive_mask"][5]
        out["positive_fp"][3] = out["positive_fp"][5]
    return out


def run_on_cpu_devices(script: str, devices: int = 8, timeout: int = 600) -> dict:
    """Runs `script` in a fresh Python with `devices` virtual CPU devices (XLA reads the flag at its
    first import, hence the subprocess); the script prints "RESULT" + json. Returns that JSON."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])
