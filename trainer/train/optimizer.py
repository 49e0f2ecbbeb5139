"""AdamW with linear warm-up and linear decay to zero, global-norm clipping, no decay on biases and
LayerNorm parameters: the reference recipe (transformers' AdamW + get_linear_schedule_with_warmup)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from trainer.config import TrainConfig


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """lr * step / warmup for step < warmup, then lr * (T - step) / (T - warmup), zero from T on.

    `step` counts optimizer updates already applied, so the first update uses lr(0) = 0 when warming
    up, as transformers' LambdaLR does."""
    warmup = max(0, min(cfg.warmup_steps, cfg.train_steps))
    decay = optax.linear_schedule(cfg.learning_rate, 0.0, max(1, cfg.train_steps - warmup))
    if warmup == 0:
        return decay
    rise = optax.linear_schedule(0.0, cfg.learning_rate, warmup)
    return optax.join_schedules([rise, decay], [warmup])


def _no_decay(path: tuple[Any, ...]) -> bool:
    names = [str(getattr(k, "key", getattr(k, "name", k))).lower() for k in path]
    return names[-1] == "bias" or any("layernorm" in n or "layer_norm" in n for n in names)


def weight_decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: everything except biases and LayerNorm scale/bias."""
    return jax.tree_util.tree_map_with_path(lambda p, _: not _no_decay(p), params)


MU_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # None: the parameters' dtype (float32)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    if cfg.adam_mu_dtype not in MU_DTYPES:
        raise ValueError(f"adam_mu_dtype must be one of {', '.join(MU_DTYPES)}, got {cfg.adam_mu_dtype!r}")
    tx = optax.adamw(
        learning_rate_schedule(cfg),
        b1=cfg.adam_b1,
        b2=cfg.adam_b2,
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        mask=weight_decay_mask,
        mu_dtype=MU_DTYPES[cfg.adam_mu_dtype],
    )
    if cfg.grad_clip_norm and cfg.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
    return tx
