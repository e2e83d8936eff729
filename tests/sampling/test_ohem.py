"""OHEM's RoI selection: the top-B candidates by loss, after NMS among the RoIs, with no positive fraction."""

from __future__ import annotations

import pytest
import torch

from libra_cli.sampling.ohem import OHEMSampler, sample_hardest_rois

# Six RoIs: losses and labels (> 0 foreground, 0 background, −1 between the IoU thresholds, ignored).
LOSSES = torch.tensor([0.1, 2.0, 0.5, 3.0, 0.2, 1.5])
LABELS = torch.tensor([1, 0, 0, -1, 0, 2])
# Far-apart boxes, except that RoI 2 = [0, 0, 10, 9] lies inside RoI 1 = [0, 0, 10, 10]: IoU 90/100 = 0.9.
BOXES = torch.tensor(
    [
        [40.0, 40.0, 50.0, 50.0],
        [0.0, 0.0, 10.0, 10.0],
        [0.0, 0.0, 10.0, 9.0],
        [20.0, 0.0, 30.0, 10.0],
        [0.0, 20.0, 10.0, 30.0],
        [20.0, 20.0, 30.0, 30.0],
    ]
)


def test_the_chosen_rois_are_the_highest_losses_among_the_candidates():
    # RoI 3 has the largest loss (3.0) but is ignored (label −1), so it is no candidate. Among the rest the
    # losses sorted are 2.0 (RoI 1), 1.5 (RoI 5), 0.5 (RoI 2), 0.2 (RoI 4), 0.1 (RoI 0): the top 3 are 1, 5, 2.
    chosen = sample_hardest_rois(LOSSES, LABELS, 3, nms_thresh=None)
    assert chosen.tolist() == [1, 5, 2]
    # One positive of three (RoI 5): the losses decide, not a positive fraction of 0.25 (0 of 3) or 0.5.


def test_nms_drops_a_near_duplicate_of_a_harder_roi():
    # RoI 2 overlaps RoI 1 at IoU 0.9 > 0.7 and has the smaller loss (0.5 < 2.0): suppressed, so the third
    # pick becomes the next hardest, RoI 4 (0.2).
    assert sample_hardest_rois(LOSSES, LABELS, 3, BOXES).tolist() == [1, 5, 4]
    # At a threshold above 0.9 the two RoIs are no duplicates.
    assert sample_hardest_rois(LOSSES, LABELS, 3, BOXES, nms_thresh=0.95).tolist() == [1, 5, 2]


def test_fewer_candidates_than_the_batch_are_all_taken():
    # Five candidates (RoI 3 ignored), B = 64: every candidate, hardest first.
    assert sample_hardest_rois(LOSSES, LABELS, 64, nms_thresh=None).tolist() == [1, 5, 2, 4, 0]


def test_sampler_masks_split_the_chosen_rois_by_label():
    sampler = OHEMSampler(batch_size_per_image=3, nms_thresh=None)
    positive, negative = sampler([LABELS], roi_losses=[LOSSES])
    # Chosen RoIs 1, 5, 2: RoI 5 is foreground, RoIs 1 and 2 background.
    assert torch.where(positive[0])[0].tolist() == [5]
    assert torch.where(negative[0])[0].tolist() == [1, 2]
    # The default keeps the paper's NMS at 0.7: with the boxes, RoI 4 replaces the duplicate RoI 2.
    positive, negative = OHEMSampler(3)([LABELS], roi_losses=[LOSSES], proposals=[BOXES])
    assert torch.where(negative[0])[0].tolist() == [1, 4]


def test_sampler_is_deterministic_and_samples_each_image_on_its_own():
    # Image 2 has image 1's losses reversed, [1.5, 0.2, 3.0, 0.5, 2.0, 0.1]: RoI 2 (3.0) and RoI 4 (2.0) top it.
    sampler = OHEMSampler(batch_size_per_image=2, nms_thresh=None)
    positive, negative = sampler([LABELS, LABELS], roi_losses=[LOSSES, LOSSES.flip(0)])
    assert (torch.where(positive[0] | negative[0])[0].tolist()) == [1, 5]
    assert (torch.where(positive[1] | negative[1])[0].tolist()) == [2, 4]
    again = sampler([LABELS, LABELS], roi_losses=[LOSSES, LOSSES.flip(0)])
    assert all(torch.equal(a, b) for a, b in zip(positive + negative, again[0] + again[1], strict=True))


@pytest.mark.parametrize(("batch", "nms"), [(0, 0.7), (4, 0.0), (4, 1.5)])
def test_invalid_settings_are_rejected(batch, nms):
    with pytest.raises(ValueError):
        OHEMSampler(batch, nms)
