"""Float32 outputs for the detector heads under mixed precision.

Under ``torch.autocast`` (bfloat16 or float16) the heads' last layers return half-precision logits and
box deltas. torchvision decodes those deltas after casting the anchors or proposals to the deltas' dtype
(``BoxCoder.decode_single``), so box coordinates would be rounded to 8 significant bits: at x ≈ 1000
bfloat16 steps by 8 pixels. The scores (softmax / sigmoid of the logits) and the losses would be
rounded likewise. :func:`float32_outputs` makes a head return its floating outputs in float32, so that
decoding, scoring and the losses run in float32 while the convolutions and matmuls keep autocast's dtype.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _to_float32(value: Any) -> Any:
    """``value`` with every float16 / bfloat16 tensor in it (nested in lists, tuples, dicts) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.element_size() < 4 else value
    if isinstance(value, dict):
        return type(value)((key, _to_float32(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(item) for item in value)
    return value


def _float32_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
    return _to_float32(output)


def float32_outputs(module: nn.Module) -> nn.Module:
    """Make ``module`` return its half-precision floating outputs as float32 (a forward hook); returns it.

    A no-op for float32 and float64 outputs, so full-precision training and inference are unchanged.
    """
    module.register_forward_hook(_float32_hook)
    return module
