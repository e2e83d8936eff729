"""Balanced Feature Pyramid (BFP): the feature-level fix of Libra R-CNN (Pang et al., CVPR 2019, §3.2).

An FPN gives each level mostly the information of its neighbours. The BFP neck sits after the FPN and
lets every level share one "balanced semantic feature": all levels are resized to one middle level,
averaged, optionally refined, and the result is resized back and added to each level as a residual.

Three parts, composed by plain calls:

- ``NonLocal2d`` — the embedded-Gaussian non-local block used as the refinement step;
- ``BalancedFeaturePyramid`` — the neck itself, ``OrderedDict -> OrderedDict`` with unchanged keys,
  shapes and channels;
- ``BackboneWithBFP`` — a torchvision FPN backbone followed by the neck, usable wherever torchvision
  expects a detection backbone (it keeps ``out_channels``).
"""

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REFINE_TYPES = ("non_local", "conv", "none")
INIT_TYPES = ("xavier", "identity")


class NonLocal2d(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018, §3.2).

    For an input x of shape [B, C, H, W] with N = H·W positions and C_inner = C // reduction:

        θ = W_θ x,  φ = W_φ x,  g = W_g x                  (1×1 convs, each [B, C_inner, N])
        A = softmax_j( θ_iᵀ φ_j / s )                       ([B, N, N], every row sums to 1)
        y_i = Σ_j A_ij g_j                                  ([B, C_inner, H, W])
        z = x + W_out y                                     (1×1 conv back to C channels)

    with s = √C_inner when ``use_scale`` is true and s = 1 otherwise. The current Libra R-CNN reference
    code does not scale (Libra R-CNN §3.2); older versions did, so the option is kept.

    Initialisation: θ, φ and g weights are drawn from a normal distribution with std 0.01 and their
    biases are zero; the output conv's weight and bias are zero. The block therefore starts as the exact
    identity (z = x), so inserting it does not disturb a network at the start of training; the output
    conv receives gradient from the first step and the other convs once it has become non-zero.
    """

    def __init__(self, channels: int, reduction: int = 1, use_scale: bool = False) -> None:
        super().__init__()
        if channels < 1 or reduction < 1 or channels // reduction < 1:
            raise ValueError(
                f"NonLocal2d: channels={channels} // reduction={reduction} must be at least 1 inner channel"
            )
        inner_channels = channels // reduction
        self.channels = channels
        self.inner_channels = inner_channels
        self.use_scale = use_scale
        self.theta = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.phi = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.g = nn.Conv2d(channels, inner_channels, kernel_size=1)
        self.out_conv = nn.Conv2d(inner_channels, channels, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small normal θ/φ/g (std 0.01, zero bias) and a zero output conv, so the block is the identity."""
        for conv in (self.theta, self.phi, self.g):
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def attention(self, x: Tensor) -> Tensor:
        """Pairwise attention A of ``x`` [B, C, H, W] -> [B, N, N], N = H·W, positions in row-major order.

        Row i holds the weights with which position i gathers every position j; each row sums to 1.
        """
        theta = self.theta(x).flatten(2)  # [B, C_inner, N]
        phi = self.phi(x).flatten(2)  # [B, C_inner, N]
        # The logits and the softmax are computed in (at least) float32 even under autocast: the logits
        # are unscaled dot products over C_inner channels (hundreds in magnitude), which bfloat16 would
        # round by whole units, and the softmax exponentiates those errors into the attention weights.
        dtype = torch.promote_types(theta.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            logits = torch.bmm(theta.transpose(1, 2).to(dtype), phi.to(dtype))  # [B, N, N]: θ_i · φ_j
            if self.use_scale:
                logits = logits / math.sqrt(self.inner_channels)
            return logits.softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [B, C, H, W] -> [B, C, H, W]: x plus the attention-weighted sum of g over all positions."""
        batch, _, height, width = x.shape
        attention = self.attention(x)  # [B, N, N]
        g = self.g(x).flatten(2)  # [B, C_inner, N]
        # y[b, :, i] = Σ_j A[b, i, j] g[b, :, j]
        y = torch.bmm(g, attention.transpose(1, 2).to(g.dtype))  # [B, C_inner, N]
        y = y.reshape(batch, self.inner_channels, height, width)
        return x + self.out_conv(y)


class BalancedFeaturePyramid(nn.Module):
    """Balanced Feature Pyramid neck (Libra R-CNN, Pang et al., CVPR 2019, §3.2; Libra R-CNN §3.2).

    Args:
        in_channels: channels C of every pyramid level (256 for torchvision's FPN).
        num_levels: number L of pyramid levels the neck receives; must equal the number of FPN outputs.
        refine_level: index (0 = finest) of the level whose size the balanced feature takes. Reference
            settings: 2 (P4) for Faster R-CNN with P2–P6, 1 (P4) for RetinaNet with P3–P7.
        refine_type: ``"non_local"`` (embedded-Gaussian block, reduction 1, no scaling — the reference),
            ``"conv"`` (one 3×3 conv, padding 1, followed by ReLU — the reference's ConvModule — whose
            output replaces the balanced feature) or ``"none"`` (integration only).
        init: how the refine block's convolutions start.
            ``"xavier"`` (the reference): Xavier-uniform weights and zero biases for every convolution of
            the neck, the non-local block's θ, φ, g and output convolution included — the authors' BFP
            initialises every ``nn.Conv2d`` it holds this way, after the non-local block's own init, so
            this is what Libra R-CNN trained with; the refinement contributes from the first step.
            ``"identity"`` (mmcv's ``NonLocal2d``): θ, φ, g ~ N(0, 0.01²) and a zero output convolution,
            so the non-local block starts as the identity and the neck as plain integration; the conv
            refine keeps Xavier (it has no identity start).

    The forward pass takes and returns an ``OrderedDict[str, Tensor]`` ordered finest first, each level
    [B, C, H_l, W_l]; keys, shapes and channels are unchanged. Any sizes work, odd ones included
    (e.g. 25×38, 13×19, 7×10, ...), because every resize targets a level's exact size.
    """

    def __init__(
        self,
        in_channels: int = 256,
        num_levels: int = 5,
        refine_level: int = 2,
        refine_type: str = "non_local",
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"BalancedFeaturePyramid: num_levels must be at least 1, got {num_levels}")
        if not 0 <= refine_level < num_levels:
            raise ValueError(
                f"BalancedFeaturePyramid: refine_level must be in [0, {num_levels - 1}] "
                f"for num_levels={num_levels}, got {refine_level}"
            )
        if refine_type not in REFINE_TYPES:
            raise ValueError(
                f"BalancedFeaturePyramid: refine_type must be one of {', '.join(REFINE_TYPES)}, got {refine_type!r}"
            )
        if init not in INIT_TYPES:
            raise ValueError(f"BalancedFeaturePyramid: init must be one of {', '.join(INIT_TYPES)}, got {init!r}")
        self.in_channels = in_channels
        self.num_levels = num_levels
        self.refine_level = refine_level
        self.refine_type = refine_type

        self.refine: nn.Module | None
        if refine_type == "non_local":
            self.refine = NonLocal2d(in_channels, reduction=1, use_scale=False)
        elif refine_type == "conv":
            # The ReLU that follows it is applied in forward (the reference's ConvModule: conv, then ReLU).
            self.refine = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        else:
            self.refine = None
        self.init = init
        if refine_type == "conv" or init == "xavier":
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)

    def forward(self, features: "OrderedDict[str, Tensor]") -> "OrderedDict[str, Tensor]":
        """``features``: L levels finest first, each [B, C, H_l, W_l] -> the same keys and shapes."""
        names = list(features.keys())
        levels = list(features.values())
        if len(levels) != self.num_levels:
            raise ValueError(f"BalancedFeaturePyramid: expected {self.num_levels} levels, got {len(levels)} ({names})")
        refine_size = levels[self.refine_level].shape[-2:]

        # 1. gather: bring every level to the refine level's size. Finer levels shrink by max pooling
        #    (keeps the strongest response of each region); the refine level and coarser ones grow by
        #    nearest interpolation (resizing to its own size leaves the refine level unchanged).
        gathered = []
        for index, level in enumerate(levels):
            if index < self.refine_level:
                gathered.append(F.adaptive_max_pool2d(level, output_size=refine_size))
            else:
                gathered.append(F.interpolate(level, size=refine_size, mode="nearest"))

        # 2. integrate: the balanced semantic feature is the plain average of the L gathered maps.
        balanced = torch.stack(gathered, dim=0).mean(dim=0)  # [B, C, H_r, W_r]

        # 3. refine: strengthen the balanced feature (or leave it as is).
        if self.refine is not None:
            balanced = self.refine(balanced)
            if self.refine_type == "conv":
                balanced = F.relu(balanced)

        # 4. scatter: resize the balanced feature back to each level's exact size (the reverse of
        #    gather) and add it to that level's input as a residual.
        outputs: OrderedDict[str, Tensor] = OrderedDict()
        for index, (name, level) in enumerate(zip(names, levels, strict=True)):
            size = level.shape[-2:]
            if index < self.refine_level:
                residual = F.interpolate(balanced, size=size, mode="nearest")
            else:
                residual = F.adaptive_max_pool2d(balanced, output_size=size)
            outputs[name] = level + residual
        return outputs


class BackboneWithBFP(nn.Module):
    """A torchvision FPN backbone followed by a Balanced Feature Pyramid: ``forward(x) = bfp(backbone(x))``.

    Args:
        backbone: a module mapping images [B, 3, H, W] to an ``OrderedDict`` of pyramid features, finest
            first, with an ``out_channels`` attribute — e.g. the result of
            ``torchvision.models.detection.backbone_utils.resnet_fpn_backbone``.
        bfp_settings: ``num_levels``, ``refine_level``, ``refine_type``, ``init``, passed to
            ``BalancedFeaturePyramid`` (its defaults where not given). ``num_levels`` must equal the number of
            feature maps the backbone returns (5 for torchvision's ResNet-FPN with its extra max-pool level:
            '0', '1', '2', '3', 'pool'); a mismatch raises ``ValueError`` at the first forward pass.

    ``out_channels`` is the backbone's, so the wrapper drops into ``FasterRCNN``/``RetinaNet`` unchanged.
    """

    def __init__(self, backbone: nn.Module, **bfp_settings: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_channels: int = backbone.out_channels
        self.bfp = BalancedFeaturePyramid(in_channels=self.out_channels, **bfp_settings)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """``x`` [B, 3, H, W] -> the backbone's pyramid, same keys and shapes, balanced by the BFP."""
        return self.bfp(self.backbone(x))
