"""common.models.siamese: the crops and the size penalty that SiamFC-family trackers share."""

from __future__ import annotations

import numpy as np

from common.models.siamese import context_side, size_penalty, subwindow


def test_subwindow_pads_beyond_the_image_with_the_fill_colour():
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :, 0] = np.arange(20)  # red counts the column
    fill = np.array([200, 100, 50], np.uint8)
    crop = subwindow(rgb, (0.0, 5.0), 6, 6, fill)  # centred on the left edge: half of it lies outside
    assert crop.shape == (6, 6, 3)
    assert (crop[:, :3] == fill).all() and crop[0, 3:, 0].tolist() == [0, 1, 2]
    assert subwindow(rgb, (10.0, 5.0), 8, 4, fill).shape == (4, 4, 3)  # resized to the output size


def test_size_penalty_is_one_for_the_same_box_and_falls_with_change():
    previous = np.array([40.0, 20.0])
    w, h = np.array([40.0, 80.0, 20.0, 40.0]), np.array([20.0, 40.0, 10.0, 40.0])
    penalty = size_penalty(w, h, previous, penalty_k=0.055)
    assert penalty[0] == 1.0
    assert np.isclose(penalty[1], penalty[2])  # twice or half the size: the same penalty
    assert (penalty[1:] < 1).all() and penalty[3] < 1  # a changed aspect ratio is penalised too
    assert np.isclose(context_side(np.array([40.0, 20.0]), 0.5), np.sqrt(70 * 50))
