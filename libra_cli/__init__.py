"""libra: balanced learning for object detection.

Libra R-CNN's IoU-balanced sampling, Balanced Feature Pyramid and balanced L1 loss, the equalization
loss for long-tailed data, the papers' imbalance diagnostics, and reports — on torchvision detectors.
"""

__version__ = "0.1.0"
