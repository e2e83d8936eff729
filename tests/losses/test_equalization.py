"""Equalization loss and its helpers (EQL paper §3).

Expected values are computed with Python's ``math`` from the formula, or worked by hand; labels follow
torchvision's convention (0 = background, class k has logit column k − 1).
"""

import math

import pytest
import torch

from libra_cli.errors import LibraError
from libra_cli.losses import (
    count_images_per_class,
    eql_classifier_bias_init,
    equalization_loss,
    image_frequency,
    init_eql_classifier,
    tail_class_mask,
    tail_ratio,
)

# Three RoIs over C = 3 foreground classes: a background RoI, one of class 1, one of class 3.
LOGITS = [[-1.0, 0.5, 2.0], [1.5, -0.3, 0.2], [0.0, -2.0, 0.7]]
LABELS = [0, 1, 3]


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def bce_term(z: float, y: int) -> float:
    """−[y·log σ(z) + (1 − y)·log(1 − σ(z))]."""
    return -(y * math.log(sigmoid(z)) + (1 - y) * math.log(1 - sigmoid(z)))


def one_hot(label: int, num_classes: int) -> list[int]:
    return [1 if label == j + 1 else 0 for j in range(num_classes)]


def eql_reference_per_roi(logits, labels, tail) -> list[float]:
    """EQL paper §3 in plain math: w_j = 1 − E(r)·T_λ(f_j)·(1 − y_j), summed over classes."""
    losses = []
    for row, label in zip(logits, labels, strict=True):
        y = one_hot(label, len(row))
        foreground = 1 if label > 0 else 0
        losses.append(sum((1 - foreground * int(tail[j]) * (1 - y[j])) * bce_term(z, y[j]) for j, z in enumerate(row)))
    return losses


def as_inputs(logits, labels, tail):
    return (
        torch.tensor(logits, dtype=torch.float64),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(tail, dtype=torch.bool),
    )


def test_no_tail_class_is_plain_sigmoid_cross_entropy():
    # λ = 0 marks no class as tail: EQL is sigmoid BCE summed over classes and averaged over RoIs.
    per_roi = [
        sum(bce_term(z, y) for z, y in zip(row, one_hot(label, 3), strict=True))
        for row, label in zip(LOGITS, LABELS, strict=True)
    ]
    logits, labels, tail = as_inputs(LOGITS, LABELS, [False, False, False])
    assert equalization_loss(logits, labels, tail).item() == pytest.approx(sum(per_roi) / 3, abs=1e-12)
    assert equalization_loss(logits, labels, tail, reduction="sum").item() == pytest.approx(sum(per_roi), abs=1e-12)
    none = equalization_loss(logits, labels, tail, reduction="none")
    assert none.shape == (3,)
    assert none.tolist() == pytest.approx(per_roi, abs=1e-12)


def test_background_roi_has_an_all_zero_target():
    # A background RoI with logits (0, 0): each class contributes −log(1 − σ(0)) = log 2.
    logits, labels, tail = as_inputs([[0.0, 0.0]], [0], [False, False])
    assert equalization_loss(logits, labels, tail).item() == pytest.approx(2 * math.log(2), abs=1e-12)


def test_tail_classes_drop_only_foreground_negative_terms():
    tail_flags = [False, True, True]
    logits, labels, tail = as_inputs(LOGITS, LABELS, tail_flags)
    expected = eql_reference_per_roi(LOGITS, LABELS, tail_flags)
    # Hand check of which terms remain: the background RoI keeps all three; the class-1 RoI keeps only
    # its own positive term (classes 2 and 3 are tail); the class-3 RoI keeps class 1's negative term and
    # its own positive term (class 3 is tail but it is the RoI's own class).
    assert expected[0] == pytest.approx(sum(bce_term(z, 0) for z in LOGITS[0]), abs=1e-15)
    assert expected[1] == pytest.approx(bce_term(1.5, 1), abs=1e-15)
    assert expected[2] == pytest.approx(bce_term(0.0, 0) + bce_term(0.7, 1), abs=1e-15)

    assert equalization_loss(logits, labels, tail, reduction="none").tolist() == pytest.approx(expected, abs=1e-12)
    assert equalization_loss(logits, labels, tail).item() == pytest.approx(sum(expected) / 3, abs=1e-12)


def logit_gradient(logits_list, labels_list, tail_flags) -> torch.Tensor:
    logits, labels, tail = as_inputs(logits_list, labels_list, tail_flags)
    logits.requires_grad_(True)
    equalization_loss(logits, labels, tail, reduction="sum").backward()
    return logits.grad


def test_foreground_roi_sends_no_gradient_to_other_tail_classes():
    # Class 3 is tail, classes 1 and 2 are not; the RoI is of class 1.
    # d/dz of the BCE term is σ(z) − y: kept terms give exactly that, dropped terms give exactly 0.
    row = [1.5, -0.3, 0.2]
    grad = logit_gradient([row], [1], [False, False, True])[0]
    assert grad[2].item() == 0.0  # tail class, not the RoI's own: suppressed exactly
    assert grad[1].item() == pytest.approx(sigmoid(-0.3), abs=1e-12)  # non-tail negative: kept
    assert grad[1].item() != 0.0
    assert grad[0].item() == pytest.approx(sigmoid(1.5) - 1, abs=1e-12)  # own class: kept


def test_background_roi_keeps_the_tail_class_gradient():
    row = [1.5, -0.3, 0.2]
    grad = logit_gradient([row], [0], [False, False, True])[0]
    assert grad[2].item() == pytest.approx(sigmoid(0.2), abs=1e-12)
    assert grad[2].item() != 0.0
    assert grad.tolist() == pytest.approx([sigmoid(z) for z in row], abs=1e-12)


def test_own_class_gradient_is_kept_when_that_class_is_tail():
    # Every class is tail; the RoI is of class 2: only its own positive term survives.
    row = [1.5, -0.3, 0.2]
    grad = logit_gradient([row], [2], [True, True, True])[0]
    assert grad[1].item() == pytest.approx(sigmoid(-0.3) - 1, abs=1e-12)
    assert grad[1].item() != 0.0
    assert grad[0].item() == 0.0
    assert grad[2].item() == 0.0


def test_mean_over_rois_scales_gradients_by_one_over_r():
    logits, labels, tail = as_inputs(LOGITS, LABELS, [False, False, False])
    logits.requires_grad_(True)
    equalization_loss(logits, labels, tail).backward()
    # Background RoI (row 0), class 1 logit: (σ(−1) − 0) / 3.
    assert logits.grad[0, 0].item() == pytest.approx(sigmoid(-1.0) / 3, abs=1e-12)


def test_large_logits_stay_finite():
    # log(1 − σ(100)) underflows if computed naively; with logits it is −100 − log(1 + e^−100) ≈ −100.
    logits, labels, tail = as_inputs([[100.0, -100.0]], [2], [False, False])
    value = equalization_loss(logits, labels, tail).item()
    assert value == pytest.approx(200.0, abs=1e-9)


def test_half_precision_logits_are_computed_in_float32():
    logits = torch.tensor([[0.0, 0.0]], dtype=torch.float16)
    loss = equalization_loss(logits, torch.tensor([0]), torch.tensor([False, True]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(2 * math.log(2), rel=1e-6)


def test_empty_batch_gives_zero_loss_connected_to_the_logits():
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = equalization_loss(logits, torch.zeros(0, dtype=torch.int64), torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 4)


@pytest.mark.parametrize(
    ("logits_shape", "labels", "tail_len", "message"),
    [
        ((3,), [0, 1, 2], 3, r"\[R, C\]"),
        ((2, 3), [0, 1, 2], 3, "labels"),
        ((3, 3), [0, 1, 2], 4, "tail_mask"),
        ((3, 3), [0, 1, 4], 3, "0..3"),
        ((3, 3), [-1, 1, 2], 3, "0..3"),
    ],
)
def test_invalid_inputs_are_rejected(logits_shape, labels, tail_len, message):
    with pytest.raises(ValueError, match=message):
        equalization_loss(torch.zeros(logits_shape), torch.tensor(labels), torch.zeros(tail_len, dtype=torch.bool))


def test_unknown_reduction_is_rejected():
    logits, labels, tail = as_inputs(LOGITS, LABELS, [False, False, False])
    with pytest.raises(LibraError, match="reduction"):
        equalization_loss(logits, labels, tail, reduction="batchmean")


def test_count_images_per_class_counts_each_class_once_per_image():
    # Image 0 holds two objects of class 1: it still counts once for class 1.
    counts = count_images_per_class([[1, 1, 2], [2], [], [3, 1]], num_classes=3)
    assert counts.tolist() == [2, 2, 1]
    with pytest.raises(LibraError, match="outside 1..3"):
        count_images_per_class([[0]], num_classes=3)


def test_image_frequency():
    freq = image_frequency(torch.tensor([5, 1, 0]), num_images=10)
    assert freq.tolist() == pytest.approx([0.5, 0.1, 0.0], abs=1e-15)
    with pytest.raises(ValueError):
        image_frequency(torch.tensor([11]), num_images=10)
    with pytest.raises(ValueError):
        image_frequency(torch.tensor([0]), num_images=0)


def test_tail_class_mask_is_strictly_below_lambda():
    # λ = 1.76e-3 (the paper's LVIS value); a class exactly at λ is not tail.
    freq = torch.tensor([0.5, 0.001, 0.0017, 1.76e-3, 0.1], dtype=torch.float64)
    assert tail_class_mask(freq, 1.76e-3).tolist() == [False, True, True, False, False]
    assert tail_class_mask(freq, 0.0).tolist() == [False] * 5
    assert tail_class_mask(freq, 1.0).tolist() == [True] * 5
    with pytest.raises(ValueError, match="lambda"):
        tail_class_mask(freq, -0.1)


def test_tail_ratio_hand_worked():
    # Tail classes at λ = 1.76e-3 are the 2nd and 3rd: (3 + 7) / (100 + 3 + 7 + 20 + 70) = 10 / 200.
    freq = torch.tensor([0.5, 0.001, 0.0017, 1.76e-3, 0.1], dtype=torch.float64)
    counts = torch.tensor([100, 3, 7, 20, 70])
    assert tail_ratio(freq, counts, 1.76e-3) == pytest.approx(0.05, abs=1e-15)
    assert tail_ratio(freq, counts, 0.0) == 0.0
    assert tail_ratio(freq, counts, 1.0) == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="undefined"):
        tail_ratio(freq, torch.zeros(5), 0.5)
    with pytest.raises(ValueError):
        tail_ratio(freq, counts[:4], 0.5)


def test_classifier_bias_init():
    # −log((1 − 0.001) / 0.001) = −log 999.
    bias = eql_classifier_bias_init()
    assert bias == pytest.approx(-6.906754778648554, abs=1e-12)
    assert sigmoid(bias) == pytest.approx(0.001, abs=1e-15)
    assert eql_classifier_bias_init(0.5) == 0.0
    for prior in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            eql_classifier_bias_init(prior)


def test_init_eql_classifier_sets_reference_initialisation():
    torch.manual_seed(0)
    layer = torch.nn.Linear(1024, 256)
    init_eql_classifier(layer)
    assert torch.all(layer.bias == torch.tensor(-math.log(999.0), dtype=layer.bias.dtype))
    # 262,144 samples of N(0, 0.01²): the sample std lies well within 2% of 0.01.
    assert layer.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert abs(layer.weight.mean().item()) < 1e-4


def test_frequency_denominator_decides_the_tail():
    # 1,000 training images of which 100 hold no box, λ = 5.5e-3. A class seen in 5 images has
    #   f = 5 / 1000 = 0.005 < 0.0055 under the paper text ("all")        → a tail class;
    #   f = 5 / 900 = 0.005556 >= 0.0055 under the reference ("annotated") → not a tail class.
    from libra_cli.engine.run import eql_frequency_denominator

    info = {"num_images": 1000, "num_annotated_images": 900}
    counts = torch.tensor([5, 500])
    masks = {
        mode: tail_class_mask(image_frequency(counts, eql_frequency_denominator(info, mode)), 5.5e-3).tolist()
        for mode in ("all", "annotated")
    }
    assert masks == {"all": [True, False], "annotated": [False, False]}
    # A dataset.json from before the annotated count was recorded falls back to all images.
    assert eql_frequency_denominator({"num_images": 1000}, "annotated") == 1000
