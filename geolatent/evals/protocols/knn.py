"""k-nearest-neighbour protocol on frozen embeddings (OlmoEarth / DINO style).

Cosine similarity, the k = 20 most similar training vectors vote with weight
``exp(sim / temperature)`` (temperature 0.07).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from geolatent.config import StrictModel


class KNNConfig(StrictModel):
    """kNN protocol settings (``settings: {knn: ...}`` in a suite, ``--set knn.k=10``)."""

    k: int = 20
    temperature: float = 0.07
    chunk: int = 2048  # test rows per similarity block (bounds memory at chunk x N_train)


def _tensor(x) -> torch.Tensor:
    # A float32 copy: cached embeddings are read-only memory maps.
    return torch.tensor(np.asarray(x, dtype=np.float32))


def knn_predict(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray,
    test_x: np.ndarray | torch.Tensor,
    task_type: str,
    num_classes: int = 0,
    config: KNNConfig | None = None,
) -> np.ndarray:
    """Predict test labels by weighted kNN vote.

    Args:
        train_x: ``[N, D]`` embeddings; train_y: ``[N]`` class ids, ``[N, K]`` 0/1 or ``[N]``
            values (regression: the weighted mean of the neighbours).
        test_x: ``[M, D]``.
        task_type: ``classification``, ``multilabel`` or ``regression`` (how ``train_y`` is
            read and neighbours are combined; kNN is not defined for segmentation).
        num_classes: number of classes (classification; ``train_y`` values must be below it).
        config: ``k`` and the vote temperature (:class:`KNNConfig`).

    Returns:
        ``[M]`` class ids, ``[M, K]`` 0/1 (a label is predicted when its weighted vote share
        exceeds 0.5) or ``[M]`` values.
    """
    cfg = config or KNNConfig()
    tr = F.normalize(torch.nan_to_num(_tensor(train_x)), dim=1)
    te = F.normalize(torch.nan_to_num(_tensor(test_x)), dim=1)
    k = min(cfg.k, tr.shape[0])
    y = torch.as_tensor(np.asarray(train_y))
    if task_type == "classification":
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"train_y holds class ids {int(y.min())}..{int(y.max())} but "
                             f"num_classes is {num_classes}; regression targets need "
                             "task_type='regression'")
        targets = F.one_hot(y.long(), num_classes).float()  # [N, C]
    elif task_type == "multilabel":
        targets = y.float()
    elif task_type == "regression":
        targets = y.float().reshape(-1, 1)
    else:
        raise ValueError(f"kNN is defined for classification, multilabel and regression only, "
                         f"not {task_type}")  # fmt: skip
    out = []
    for s in range(0, te.shape[0], cfg.chunk):
        sim = te[s : s + cfg.chunk] @ tr.T  # [m, N]
        top, idx = sim.topk(k, dim=1)
        # exp(sim / T) normalized to vote shares: a softmax, computed stably.
        w = torch.softmax(top / cfg.temperature, dim=1)
        votes = torch.einsum("mk,mkc->mc", w, targets[idx])
        out.append(votes)
    votes = torch.cat(out)
    if task_type == "classification":
        return votes.argmax(1).numpy()
    if task_type == "multilabel":
        return (votes > 0.5).long().numpy()
    return votes[:, 0].numpy()
