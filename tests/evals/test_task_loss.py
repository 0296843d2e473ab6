"""The one task loss (geolatent.supervised.task_loss) shared by fine-tuning and the evals."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from geolatent.supervised import task_loss


def test_classification_ignores_unlabelled_and_weights_classes():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    y = torch.tensor([0, 1, -1])
    w = torch.tensor([1.0, 3.0])
    got = task_loss("classification", logits, y, ignore_index=-1, class_weight=w)
    assert got == pytest.approx(float(F.cross_entropy(logits[:2], y[:2], weight=w)))
    assert task_loss("segmentation", logits[:, :, None, None], torch.full((3, 1, 1), -1)) is None


def test_regression_standardizes_and_skips_non_finite_targets():
    out = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([10.0, 12.0, float("nan")])
    got = task_loss("regression", out, y, target_mean=10.0, target_std=2.0)
    assert got == pytest.approx(0.0)  # (10-10)/2 = 0 and (12-10)/2 = 1: both exact
    pix = task_loss("pixel_regression", torch.zeros(1, 1, 2, 2), torch.tensor([[[1.0, 3.0],
                                                                               [1.0, 3.0]]]))
    assert pix == pytest.approx(5.0)
    assert task_loss("regression", out, torch.full((3,), float("nan"))) is None


def test_multilabel_and_unknown_task():
    logits, y = torch.zeros(2, 3), torch.ones(2, 3)
    assert task_loss("multilabel", logits, y) == pytest.approx(float(torch.log(torch.tensor(2.0))))
    with pytest.raises(ValueError, match="task must be one of"):
        task_loss("detection", logits, y)
