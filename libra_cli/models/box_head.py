"""The reference's initialisation of the Faster / Mask R-CNN box head (mmdetection v1's BBoxHead).

torchvision's ``TwoMLPHead`` and ``FastRCNNPredictor`` keep ``nn.Linear``'s default, Kaiming-uniform with
a = √5, whose weights have std 1/√(3·fan_in): about 0.018 for a 1024-input layer (classifier and box
regressor alike) and 0.005 for the first FC of 256 × 7 × 7 inputs. The reference initialises the shared FCs
with Xavier-uniform (bias 0), the classifier with N(0, 0.01²) and the box regressor with N(0, 0.001²),
biases 0 (``ConvFCBBoxHead.init_weights`` and ``BBoxHead.init_weights``).

The RPN and RetinaNet heads need nothing here: torchvision already initialises every conv of ``RPNHead``
and of RetinaNet's two towers with N(0, 0.01²), bias 0, and the classification logits' bias at the
prior 0.01 — the reference's ``normal_init(std=0.01)`` and ``bias_init_with_prob(0.01)``.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

REFERENCE_CLASSIFIER_STD = 0.01
REFERENCE_BOX_REGRESSOR_STD = 0.001


def init_box_head_as_reference(box_head: nn.Module, predictor: nn.Module) -> None:
    """Initialise the box head's FC layers and the predictor as the reference does (in place).

    Args:
        box_head: the shared FCs (torchvision's ``TwoMLPHead``: ``fc6``, ``fc7``); every ``nn.Linear`` in it
            becomes Xavier-uniform with bias 0.
        predictor: ``cls_score`` and ``bbox_pred`` linears. ``bbox_pred`` becomes N(0, 0.001²), bias 0. A
            ``FastRCNNPredictor``'s softmax classifier becomes N(0, 0.01²), bias 0; EQL's sigmoid classifier
            keeps its own start (N(0, 0.01²) with the prior's bias, as the EQL reference).
    """
    for layer in box_head.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    nn.init.normal_(predictor.bbox_pred.weight, std=REFERENCE_BOX_REGRESSOR_STD)
    nn.init.zeros_(predictor.bbox_pred.bias)
    if isinstance(predictor, FastRCNNPredictor):
        nn.init.normal_(predictor.cls_score.weight, std=REFERENCE_CLASSIFIER_STD)
        nn.init.zeros_(predictor.cls_score.bias)
