"""SiamMask-sharp (foolwood/SiamMask, the tracker CVAT ships) on PyTorch, with its whole state in the store.

Tracks as the original's ``siamese_init`` / ``siamese_track`` with mask and refinement, in its DAVIS
configuration: exemplar and search crops padded with the first frame's average colour, 5 anchors on a 25×25
grid, scale and ratio penalties, a cosine window, the box update at the learning rate, the refined 127×127
mask pasted back into the image and its rotated box. The network sees BGR frames, as it was trained (the
original reads frames with OpenCV), whatever the client sends. Per track the store holds the template
features, the average colour and the image size once; each step stores the centre and size under a new token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from common.core.errors import RequestError
from common.core.image import Image
from common.core.results import Mask, Region
from common.core.settings import Settings, polygon_epsilon, setting
from common.models.siamese import context_side, size_penalty, subwindow
from common.models.tracking import Tracker
from common.runtime import weights
from common.runtime.backends import torch_device
from siammask_net import SiamMask

WEIGHTS_URL = "http://www.robots.ox.ac.uk/~qwang/SiamMask_DAVIS.pth"  # the location CVAT's function uses
# config_davis.json
EXEMPLAR, INSTANCE, STRIDE, BASE_SIZE, OUT_SIZE = 127, 255, 8, 8, 127
SEG_THRESHOLD, PENALTY_K, WINDOW_INFLUENCE, LR, CONTEXT = 0.35, 0.04, 0.4, 1.0, 0.5
RATIOS, SCALES = (0.33, 0.5, 1, 2, 3), (8,)
SCORE_SIZE = (INSTANCE - EXEMPLAR) // STRIDE + 1 + BASE_SIZE  # 25
MIN_SIZE, MIN_CONTOUR_AREA = 10.0, 100
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiamMaskSettings(Settings):
    sha256: str = setting("SIAMMASK_SHA256", "")  # pins the checkpoint (empty: logged, not checked)


def anchors() -> np.ndarray:
    """(5·25·25, 4) anchors (centre x, centre y, w, h) in search-crop pixels from its centre, anchor-major."""
    shapes = []
    for ratio in RATIOS:
        ws = int(np.sqrt(STRIDE * STRIDE / ratio))
        hs = int(ws * ratio)
        shapes += [(ws * scale, hs * scale) for scale in SCALES]
    offsets = (np.arange(SCORE_SIZE) - SCORE_SIZE // 2) * STRIDE
    xs, ys = np.meshgrid(offsets, offsets)
    out = np.zeros((len(shapes), SCORE_SIZE * SCORE_SIZE, 4), np.float32)
    out[:, :, 0], out[:, :, 1] = xs.ravel(), ys.ravel()
    out[:, :, 2:] = np.asarray(shapes, np.float32)[:, None, :]
    return out.reshape(-1, 4)


def load_checkpoint(model: torch.nn.Module, path: Path, log_line=log.info) -> None:
    """Load a checkpoint as the original's loader accepts it (a state dict, or one under ``state_dict``; with
    or without a ``module.`` prefix): every key of the model must be there with its shape; keys beyond the
    model's are named in the log and ignored."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f"{path}: not a checkpoint (a dict of tensors)")
    state = checkpoint.get("state_dict", checkpoint)
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise RuntimeError(f"{path}: the checkpoint lacks {len(missing)} of SiamMask's entries, first {missing[0]}")
    wrong = [k for k in wanted if tuple(state[k].shape) != tuple(wanted[k].shape)]
    if wrong:
        raise RuntimeError(f"{path}: {wrong[0]} is {tuple(state[wrong[0]].shape)} in the checkpoint, SiamMask's is "
                           f"{tuple(wanted[wrong[0]].shape)}")
    extra = sorted(set(state) - set(wanted))
    if extra:
        log_line(f"{path}: ignoring {len(extra)} checkpoint entries SiamMask does not use: {', '.join(extra[:5])}")
    model.load_state_dict({k: state[k] for k in wanted}, strict=True)


def paste_back(mask: np.ndarray, crop_box: list[float], row: int, col: int, width: int, height: int) -> np.ndarray:
    """The refined mask (127×127, of the exemplar-sized box at grid cell (row, col)) in image pixels (float),
    with the original's affine map; -1 outside it."""
    s = crop_box[2] / INSTANCE
    sub_x = crop_box[0] + (col - BASE_SIZE / 2) * STRIDE * s
    sub_y = crop_box[1] + (row - BASE_SIZE / 2) * STRIDE * s
    s = OUT_SIZE / (s * EXEMPLAR)
    back = [-sub_x * s, -sub_y * s, width * s, height * s]
    a, b = (width - 1) / back[2], (height - 1) / back[3]
    mapping = np.array([[a, 0, -a * back[0]], [0, b, -b * back[1]]], np.float64)
    return cv2.warpAffine(mask, mapping, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=-1)


def rotated_box(mask: np.ndarray, center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The 4 corners of the largest outer contour's min-area rectangle, or of the axis-aligned box of
    (centre, size) when the mask has no contour over 100 px (as the original)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    areas = [cv2.contourArea(c) for c in contours]
    if contours and max(areas) > MIN_CONTOUR_AREA:
        return cv2.boxPoints(cv2.minAreaRect(contours[int(np.argmax(areas))].reshape(-1, 2))).astype(np.float64)
    x, y, w, h = center[0] - size[0] / 2, center[1] - size[1] / 2, size[0], size[1]
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)


@dataclass
class Step:
    """What one ``siamese_track`` call gives: the new centre and size (clamped), the chosen anchor's score,
    the refinement output (127×127 probabilities), the mask in the image and its rotated box."""

    center: np.ndarray
    size: np.ndarray
    score: float
    refined: np.ndarray
    mask: np.ndarray
    corners: np.ndarray


class ModelHandler(Tracker):
    settings: SiamMaskSettings

    def __init__(self, settings=None, log=None, store=None):
        super().__init__(settings, log, store)
        self.device = torch_device()
        path = weights.resolve(weights.Weights("SiamMask_DAVIS.pth", url=WEIGHTS_URL,
                                               sha256=self.settings.sha256 or None))
        digest = weights.sha256_of(path)
        if self.settings.sha256 and not digest.startswith(self.settings.sha256.lower()):
            raise RuntimeError(f"{path}: SHA-256 {digest} is not the pinned SIAMMASK_SHA256 {self.settings.sha256}")
        self.net = SiamMask(len(RATIOS) * len(SCALES)).eval()
        load_checkpoint(self.net, path, self.warn)
        self.warn(f"SiamMask checkpoint {path.name}: SHA-256 {digest} (pin it with SIAMMASK_SHA256)")
        self.net.to(self.device)
        self.anchors = anchors()
        window = np.outer(np.hanning(SCORE_SIZE), np.hanning(SCORE_SIZE))
        self.window = np.tile(window.ravel(), len(RATIOS) * len(SCALES))

    def tensor(self, crop: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32))[None].to(self.device)

    # ------------------------------------------------------------ the original's two calls

    @torch.inference_mode()
    def template(self, bgr: np.ndarray, center: np.ndarray, size: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """``siamese_init``: the exemplar crop's template features (1, 256, 7, 7)."""
        side = round(context_side(size, CONTEXT))
        crop = subwindow(bgr, center, side, EXEMPLAR, fill, half_to_even=True)
        return self.net.template(self.tensor(crop)).cpu().numpy()

    @torch.inference_mode()
    def track(self, bgr: np.ndarray, template: np.ndarray, fill: np.ndarray, center: np.ndarray,
              size: np.ndarray) -> Step:
        """``siamese_track`` with mask and refinement enabled."""
        height, width = bgr.shape[:2]
        side = context_side(size, CONTEXT)
        scale = EXEMPLAR / side
        search = round(side + 2 * ((INSTANCE - EXEMPLAR) / 2) / scale)
        crop_box = [center[0] - search / 2, center[1] - search / 2, search, search]
        crop = subwindow(bgr, center, search, INSTANCE, fill, half_to_even=True)
        cls, loc, stages, corr = self.net.track(torch.tensor(template, device=self.device), self.tensor(crop))
        delta = loc[0].reshape(4, -1).cpu().numpy()
        score = torch.softmax(cls[0].reshape(2, -1), dim=0)[1].cpu().numpy()
        a = self.anchors
        cx, cy = delta[0] * a[:, 2] + a[:, 0], delta[1] * a[:, 3] + a[:, 1]
        w, h = np.exp(delta[2]) * a[:, 2], np.exp(delta[3]) * a[:, 3]

        penalty = size_penalty(w, h, size * scale, PENALTY_K)
        pscore = penalty * score * (1 - WINDOW_INFLUENCE) + self.window * WINDOW_INFLUENCE
        best = int(np.argmax(pscore))
        lr = penalty[best] * score[best] * LR
        new_center = np.array([center[0] + cx[best] / scale, center[1] + cy[best] / scale])
        new_size = np.array([size[0] * (1 - lr) + w[best] / scale * lr, size[1] * (1 - lr) + h[best] / scale * lr])

        _, row, col = np.unravel_index(best, (len(self.anchors) // SCORE_SIZE ** 2, SCORE_SIZE, SCORE_SIZE))
        refined = torch.sigmoid(self.net.refine(stages, corr, int(row), int(col)))[0].cpu().numpy()
        mask = paste_back(refined, crop_box, int(row), int(col), width, height) > SEG_THRESHOLD
        corners = rotated_box(mask, new_center, new_size)

        new_center = np.clip(new_center, 0, [width, height])
        new_size = np.clip(new_size, MIN_SIZE, [max(width, MIN_SIZE), max(height, MIN_SIZE)])
        return Step(new_center, new_size, float(score[best]), refined, mask, corners)

    # ------------------------------------------------------------ the tracker protocol

    def start(self, image: Image, region: Region) -> str:
        if region.type == "rectangle":
            x1, y1, x2, y2 = region.box
        else:  # a polygon or a mask starts SiamMask on its bounding box
            found = Mask.from_full(region.to_mask(*image.size))
            if found is None:
                raise RequestError(f"the {region.type} to track covers no pixel of the image")
            x1, y1, x2, y2 = found.bbox[0], found.bbox[1], found.bbox[2] + 1, found.bbox[3] + 1
        center = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float64)
        size = np.array([max(x2 - x1, 1.0), max(y2 - y1, 1.0)], np.float64)
        bgr = image.bgr  # as the original reads frames with OpenCV
        fill = bgr.mean(axis=(0, 1))
        track = self.store.put({"template": self.template(bgr, center, size, fill), "fill": fill},
                               {"kind": "siammask-template", "image_size": list(image.size)})
        return self.save(track, center, size, image.size, region.type)

    def save(self, track: str, center, size, image_size, shape_type: str, score: float | None = None) -> str:
        return self.store.put({}, {"kind": "siammask-step", "track": track, "center": [float(v) for v in center],
                                   "size": [float(v) for v in size], "image_size": list(image_size),
                                   "type": shape_type, "score": score}, near=track)

    def advance(self, image: Image, token: str, what: str) -> tuple[Step, str, str]:
        """One step from the state ``token`` names: what the original computes, the new token and the track's
        shape type."""
        _, state = self.load_step(token, what, "siammask-step", image)
        track, _ = self.store.get(state["track"], f"{what} (its template)")
        bgr = image.bgr  # as the original reads frames with OpenCV
        found = self.track(bgr, track["template"], track["fill"], np.array(state["center"]), np.array(state["size"]))
        token = self.save(state["track"], found.center, found.size, image.size, state["type"], found.score)
        return found, token, state["type"]

    def step(self, image: Image, token: str, what: str) -> tuple[Region, str]:
        found, token, shape_type = self.advance(image, token, what)
        width, height = image.size
        if shape_type != "rectangle":
            region = Region.from_mask(found.mask, shape_type, polygon_epsilon(), score=found.score)
            if region is not None:
                return region, token
        # a rectangle (the rotated box's axis-aligned box, as CVAT's SiamMask shows it), or the rotated box
        # itself when the mask is empty
        if shape_type == "polygon":
            return Region("polygon", polygon=np.clip(found.corners, 0, [width, height]), score=found.score), token
        x1, y1 = np.clip(found.corners.min(axis=0), 0, [width, height])
        x2, y2 = np.clip(found.corners.max(axis=0), 0, [width, height])
        box = Region("rectangle", box=(float(x1), float(y1), float(x2), float(y2)), score=found.score)
        if shape_type == "rectangle":
            return box, token
        filled = Mask.from_full(box.to_mask(width, height))
        if filled is None:  # a box squeezed to nothing at the image's edge: its nearest pixel
            x, y = (min(int(v), limit - 1) for v, limit in zip((x1, y1), (width, height)))
            filled = Mask(np.ones((1, 1), bool), x, y)
        return Region("mask", mask=filled, score=found.score), token
