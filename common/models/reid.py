"""Re-identification between two frames: appearance embeddings matched with the Hungarian algorithm.

CVAT's reid protocol (../shared/docs/cvat-protocol.md 4.4): for each box of ``boxes0`` the index of its match in ``boxes1``
or -1. A pair can match only when both boxes have the same ``label_id`` and their centres are at most
``max_distance`` pixels apart; the assignment minimises the total cosine distance over eligible pairs, and a
pair is kept only when its distance is at most ``threshold``. No index of ``boxes1`` is used twice.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from common.core.image import Image
from common.core.prompts import ReidBox
from common.models.base import Model

INELIGIBLE = 1e6  # a cost no eligible pair reaches (cosine distances are at most 2)


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) cosine distances between the rows of ``a`` (N, D) and ``b`` (M, D)."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - a @ b.T, 0.0, 2.0)


def eligible_pairs(boxes0: list[ReidBox], boxes1: list[ReidBox], max_distance: float) -> np.ndarray:
    """(N, M) booleans: same label and box centres within ``max_distance`` pixels."""
    def centres(boxes: list[ReidBox]) -> np.ndarray:
        return np.array([[(b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2] for b in boxes]).reshape(-1, 2)

    near = np.linalg.norm(centres(boxes0)[:, None, :] - centres(boxes1)[None, :, :], axis=2) <= max_distance
    same_label = np.array([[b0.label_id == b1.label_id for b1 in boxes1] for b0 in boxes0], bool).reshape(near.shape)
    return near & same_label


def match(distances: np.ndarray, eligible: np.ndarray, threshold: float) -> list[int]:
    """For each row, the column assigned to it (minimum total distance over eligible pairs) or -1."""
    result = [-1] * distances.shape[0]
    if distances.size == 0:
        return result
    rows, columns = linear_sum_assignment(np.where(eligible, distances, INELIGIBLE))
    for row, column in zip(rows, columns):
        if eligible[row, column] and distances[row, column] <= threshold:
            result[int(row)] = int(column)
    return result


class Reidentifier(Model):
    """Base of reid functions: implement :meth:`embed`; matching is done here."""

    kind = "reid"
    work_bytes_per_pixel = 2  # measured, per image: the crops are small; the image is not copied whole

    def embed(self, rgb: np.ndarray, boxes: list[ReidBox]) -> np.ndarray:
        """(len(boxes), D) appearance embeddings of the boxes' crops of ``rgb``."""
        raise NotImplementedError

    def reidentify(self, image0: Image, boxes0: list[ReidBox], image1: Image, boxes1: list[ReidBox],
                   threshold: float, max_distance: float) -> list[int]:
        """For each box of ``boxes0`` the index of its match in ``boxes1``, or -1."""
        if not boxes0 or not boxes1:
            return [-1] * len(boxes0)
        eligible = eligible_pairs(boxes0, boxes1, max_distance)
        if not eligible.any():
            return [-1] * len(boxes0)
        distances = cosine_distances(self.embed(image0.rgb, boxes0), self.embed(image1.rgb, boxes1))
        return match(distances, eligible, threshold)
