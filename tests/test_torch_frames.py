"""common.models.torch_frames: frames resized on the device as Pillow resizes them, masks cut to their boxes
on the device as Mask.from_full cuts them. Runs on the CPU, and on CUDA too where there is one."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from common.core.image import Image
from common.core.results import Mask
from common.models.torch_frames import TorchSettings, masks_of, pixels, resized, two_pass_resized, uint8_resized

# each path on the CPU, and what a CUDA device runs where there is one
PATHS = [(uint8_resized, "cpu", 1, 0.01), (two_pass_resized, "cpu", 2, 0.08)]
PATHS += [(resized, "cuda", 2, 0.08)] if torch.cuda.is_available() else []


@pytest.mark.parametrize("resize, device, most, share", PATHS, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("mode, size", [("bilinear", (576, 1024)), ("bilinear", (300, 400)),
                                        ("bicubic", (1024, 1024)), ("bicubic", (512, 512))])
def test_resizing_on_the_device_gives_pillows_pixels_within_a_grey_level(data_dir, resize, device, most, share,
                                                                          mode, size):
    rgb = Image.from_bytes((data_dir / "images" / "dog.jpg").read_bytes()).rgb
    resample = {"bilinear": PIL.Image.BILINEAR, "bicubic": PIL.Image.BICUBIC}[mode]
    expected = np.asarray(PIL.Image.fromarray(rgb).resize(size[::-1], resample)).astype(np.int16)
    found = resize(pixels(rgb, torch.device(device)), size, mode)
    assert found.dtype == torch.float32 and found.shape == (1, 3, *size)
    found = found[0].permute(1, 2, 0).cpu().numpy()
    assert np.array_equal(found, np.round(found)) and found.min() >= 0 and found.max() <= 255
    levels = np.abs(found.astype(np.int16) - expected)
    assert levels.max() <= most and (levels > 0).mean() < share


@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 40)),
                  elements=st.booleans() | st.just(False)))
@settings(max_examples=200, deadline=None)
def test_masks_are_cut_to_their_boxes_as_from_full_cuts_them(masks):
    logits = torch.from_numpy(np.where(masks, 3.0, -3.0).astype(np.float32))
    for found, mask in zip(masks_of(logits), masks):
        expected = Mask.from_full(mask)
        if expected is None:
            assert found is None
        else:
            assert (found.x, found.y) == (expected.x, expected.y)
            assert np.array_equal(found.pixels, expected.pixels)


def test_preprocess_setting_is_checked():
    assert TorchSettings.from_env({}).on_device
    assert not TorchSettings.from_env({"PREPROCESS": "package"}).on_device
    with pytest.raises(ValueError, match="PREPROCESS='gpu'"):
        TorchSettings.from_env({"PREPROCESS": "gpu"})
