"""FLOPs of a training step, counted analytically from the encoder's shape and the batch's layout.

Model FLOPs (the MFU convention): forward + backward = 3 x forward, where the forward of a row of L
tokens through a layer costs 2 x (its non-embedding parameters) per token plus 4 L^2 H for the
attention scores and values. Executed FLOPs add what a memory plan recomputes: gradient caching runs
the forward twice, full rematerialisation recomputes each block's forward, "dots" remat only the
attention part, "qkv" the query/key/value matmul and the attention, a per-layer mix ("dots:7,qkv:17")
each layer its own; the attention's backward always recomputes its scores (half its forward). Both
count what runs: padded or packed slots at their full length.
"""

from __future__ import annotations

from typing import Any

from trainer.model.modeling import layer_modes


def nonembed_params(hidden: int, layers: int, intermediate: int) -> int:
    """Per-token matmul parameters of the blocks (QKV, attention output, FFN) plus biases and norms."""
    per_layer = 4 * hidden * hidden + 4 * hidden + 2 * hidden * intermediate + intermediate + hidden + 4 * hidden
    return layers * per_layer


def forward_flops(enc: Any, rows: int, length: int) -> tuple[float, float]:
    """(dense, attention) forward FLOPs of `rows` rows of `length` tokens through the encoder `enc`
    (an EncoderConfig)."""
    dense = 2.0 * nonembed_params(enc.hidden_size, enc.num_hidden_layers, enc.intermediate_size) * rows * length
    attention = 4.0 * enc.num_hidden_layers * enc.hidden_size * rows * length * length
    return dense, attention


def step_flops(enc: Any, rows: int, length: int, chunked: bool = False, remat: str = "none") -> tuple[float, float]:
    """(model FLOPs, executed FLOPs) of one step over `rows` rows of `length` tokens (all devices)."""
    dense, attention = forward_flops(enc, rows, length)
    fwd = dense + attention
    model = 3.0 * fwd
    # The attention's backward recomputes the scores (modeling.attention's custom VJP): half its forward.
    executed = model + 0.5 * attention + (fwd if chunked else 0.0)
    qkv = 6.0 * enc.hidden_size**2 * enc.num_hidden_layers * rows * length  # the query/key/value matmul
    extra = {"none": 0.0, "dots": attention, "full": fwd, "qkv": qkv + attention}
    modes = layer_modes(remat, enc.num_hidden_layers)  # a per-layer mix: each layer its share
    executed += sum(extra[m] for m in modes) / len(modes)
    return model, executed


def roofline_s(flops: float, bytes_accessed: float | None, peak_tflops: float, hbm_gbps: float) -> float:
    """A program's roofline time: the longer of its FLOPs at peak and its memory traffic at HBM bandwidth."""
    return max(flops / (peak_tflops * 1e12), (bytes_accessed or 0.0) / (hbm_gbps * 1e9))
