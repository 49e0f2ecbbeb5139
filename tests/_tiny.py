"""Shared tiny fixtures for the train-step tests: a small random encoder and random batches."""

import jax
import jax.numpy as jnp
import numpy as np

from tests._xla import cpu_devices_env
from trainer.model.modeling import EncoderConfig, SentenceEncoder

TINY = EncoderConfig(
    vocab_size=97,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
)


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
    env = cpu_devices_env(devices)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


class TwinBert:
    """One random 2-layer BERT twice: as a sentence-transformers model (torch) and as our Flax encoder
    with the same weights, plus one random batch in both forms, for loss and gradient parity tests."""

    def __init__(self, tmp_path, triplet=False, batch=8, length=10, seed=5):
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        from trainer.model.hf_loading import hf_state_dict_to_params

        torch.manual_seed(0)
        hf_cfg = transformers.BertConfig(
            vocab_size=60,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
        transformers.BertModel(hf_cfg, add_pooling_layer=False).save_pretrained(tmp_path)
        vocab = tmp_path / "vocab.txt"
        vocab.write_text(
            "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(55)]) + "\n"
        )
        transformers.BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(tmp_path)
        self.st = SentenceTransformer(str(tmp_path), device="cpu")
        self.st.eval()  # no dropout on either side; gradients still flow
        self.auto = self.st[0].auto_model
        self.config = EncoderConfig.from_hf_dict(hf_cfg.to_dict())
        sd = {k: v.detach().numpy() for k, v in self.auto.state_dict().items()}
        self.params = hf_state_dict_to_params(sd, self.config)["params"]

        rng = np.random.default_rng(seed)
        self.batch, self.features = {}, []
        for k, col in enumerate(("anchor", "positive", "negative") if triplet else ("anchor", "positive")):
            lengths = rng.integers(3, length + 1, size=batch)
            mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
            ids = (rng.integers(5, 60, size=(batch, length)) * mask).astype(np.int32)
            ids[:, 0] = 2
            self.batch[f"{col}_ids"], self.batch[f"{col}_mask"] = ids, mask
            self.batch[f"{col}_fp"] = (np.arange(batch) + 1000 * k).astype(np.int32)
            self.features.append(
                {
                    "input_ids": torch.tensor(ids, dtype=torch.long),
                    "attention_mask": torch.tensor(mask, dtype=torch.long),
                    "token_type_ids": torch.zeros((batch, length), dtype=torch.long),
                }
            )

    def st_loss_and_grads(self, loss_module):
        """(loss, {HF parameter name: gradient}) of a sentence-transformers loss on the batch."""
        self.st.zero_grad()
        loss = loss_module(self.features, None)
        loss.backward()
        return loss.item(), {k: p.grad.numpy().copy() for k, p in self.auto.named_parameters() if p.grad is not None}

    def our_loss_and_grads(self, cfg, batch=None):
        """(loss, gradient tree) of our train step's loss_and_grads, jitted, without dropout; `batch`
        defaults to the padded one (a packed form of it works too)."""
        from trainer.train.train_step import as_apply_fn, as_packed_apply_fn, loss_and_grads

        model = SentenceEncoder(self.config)
        batch = self.batch if batch is None else batch
        fn = as_packed_apply_fn(model) if "packed_ids" in batch else as_apply_fn(model)
        loss, grads = jax.jit(lambda p, b: loss_and_grads(fn, p, b, cfg, jax.random.PRNGKey(0), True))(
            self.params, batch
        )
        return float(loss), grads

    def common_gradients(self, grads, st_grads):
        """Our gradient tree and ST's gradients as two flat vectors over the parameters both have."""
        from trainer.model.hf_loading import params_to_hf_state_dict

        ours = params_to_hf_state_dict({"params": grads}, self.config)
        common = sorted(set(ours) & set(st_grads))
        assert len(common) >= 30  # every weight of 2 layers + embeddings
        return (
            np.concatenate([ours[k].ravel() for k in common]),
            np.concatenate([st_grads[k].ravel() for k in common]),
        )
