"""NanoTrack v2 (a Siamese single-object tracker) on ONNX Runtime, with its whole state in the state store.

Per object: the template features of the first frame's box (stored once per track), and per step its centre,
size and the tracking settings (stored under a new token each step). Follows the SiamRPN++/NanoTrack
tracking procedure: a search crop twice the context size around the last position, softmax scores on a 16×16
grid, box regression, scale and aspect-ratio change penalties, a cosine window, and a size update whose
rate depends on the score. OpenCV's ``TrackerNano`` (same weights) is the reference it is tested against.
"""

from __future__ import annotations

import numpy as np

from common.core.image import Image
from common.core.results import Region
from common.models.siamese import context_side, size_penalty, subwindow
from common.models.tracking import Tracker
from common.runtime import weights
from common.runtime.backends import OrtModel, free_spatial_dims, num_threads

BACKBONE = weights.Weights(
    "nanotrack_v2_backbone.onnx",
    url="https://github.com/HonglinChu/SiamTrackers/raw/248663fd/NanoTrack/models/nanotrackv2/nanotrack_backbone_sim.onnx",
    sha256="530bdd0cd00f19afab79a863e71ba71e3312395a5dc9151af675082bdaaa2fc4",
)
HEAD = weights.Weights(
    "nanotrack_v2_head.onnx",
    url="https://github.com/HonglinChu/SiamTrackers/raw/248663fd/NanoTrack/models/nanotrackv2/nanotrack_head_sim.onnx",
    sha256="0d8c0637be849f092cc7236cae02e55c8b9455ebe37ba50601d6115db4247cd9",
)
EXEMPLAR, INSTANCE, STRIDE = 127, 255, 16
SETTINGS = {"context_amount": 0.5, "penalty_k": 0.055, "window_influence": 0.455, "lr": 0.37}  # OpenCV's values
MIN_SIZE = 10.0


class ModelHandler(Tracker):

    def __init__(self, settings=None, log=None, store=None):
        super().__init__(settings, log, store)
        threads = num_threads()
        self.backbone = OrtModel(free_spatial_dims(weights.resolve(BACKBONE, "BACKBONE_PATH")), threads=threads)
        self.head = OrtModel(weights.resolve(HEAD, "HEAD_PATH"), threads=threads)
        self.score_size = int(self.head.session.get_outputs()[0].shape[2])
        offsets = (np.arange(self.score_size) - self.score_size // 2) * STRIDE
        self.grid_x, self.grid_y = np.meshgrid(offsets.astype(np.float32), offsets.astype(np.float32))
        # A Hann window peaking at the grid cell of offset 0 (np.hanning of an even length peaks half a cell
        # before it, which biases every step up and to the left).
        hann = np.cos(np.pi * offsets / (STRIDE * self.score_size)) ** 2
        self.window = np.outer(hann, hann).astype(np.float32)

    def features(self, crop: np.ndarray) -> np.ndarray:
        blob = np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)  # RGB, 0..255
        return self.backbone({"input": blob})[0]

    def start(self, image: Image, region: Region) -> str:
        x1, y1, x2, y2 = region.box
        center = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float64)
        size = np.array([max(x2 - x1, 1.0), max(y2 - y1, 1.0)], np.float64)
        fill = image.mean_color  # pads crops beyond the image edge, as in SiamFC-family trackers
        side = round(context_side(size, SETTINGS["context_amount"]))
        template = self.features(subwindow(image.rgb, center, side, EXEMPLAR, fill))
        track = self.store.put({"template": template, "fill": fill}, {"kind": "nanotrack-template"})
        return self.save(track, center, size, SETTINGS, image.size)

    def save(self, track: str, center, size, settings: dict, image_size) -> str:
        return self.store.put({}, {"kind": "nanotrack-step", "track": track, "center": [float(v) for v in center],
                                   "size": [float(v) for v in size], "settings": settings,
                                   "image_size": list(image_size)}, near=track)

    def step(self, image: Image, token: str, what: str) -> tuple[Region, str]:
        _, state = self.load_step(token, what, "nanotrack-step", image)
        track, _ = self.store.get(state["track"], f"{what} (its template)")
        center, size = self.locate(image.rgb, track, np.array(state["center"]), np.array(state["size"]),
                                   state["settings"])
        token = self.save(state["track"], center, size, state["settings"], image.size)
        width, height = image.size
        box = np.clip([center[0] - size[0] / 2, center[1] - size[1] / 2,
                       center[0] + size[0] / 2, center[1] + size[1] / 2], 0, [width, height, width, height])
        return Region("rectangle", box=tuple(float(v) for v in box)), token

    def locate(self, rgb: np.ndarray, track: dict, center: np.ndarray, size: np.ndarray,
               settings: dict) -> tuple[np.ndarray, np.ndarray]:
        """One tracking step: the new centre and size of the object."""
        side = context_side(size, settings["context_amount"])
        scale = EXEMPLAR / side
        search = subwindow(rgb, center, round(side * INSTANCE / EXEMPLAR), INSTANCE, track["fill"])
        cls, loc = self.head({"input1": track["template"], "input2": self.features(search)})
        logits = cls[0].astype(np.float64)
        score = 1.0 / (1.0 + np.exp(logits[0] - logits[1]))  # softmax over (background, object)
        x1, y1 = self.grid_x - loc[0, 0], self.grid_y - loc[0, 1]
        x2, y2 = self.grid_x + loc[0, 2], self.grid_y + loc[0, 3]
        w, h = np.maximum(x2 - x1, 1e-3), np.maximum(y2 - y1, 1e-3)
        penalty = size_penalty(w, h, size * scale, settings["penalty_k"])
        pscore = penalty * score * (1 - settings["window_influence"]) + self.window * settings["window_influence"]
        best = np.unravel_index(int(np.argmax(pscore)), pscore.shape)
        lr = penalty[best] * score[best] * settings["lr"]
        height, width = rgb.shape[:2]
        center = np.array([center[0] + (x1[best] + x2[best]) / 2 / scale,
                           center[1] + (y1[best] + y2[best]) / 2 / scale])
        size = size * (1 - lr) + np.array([w[best], h[best]]) / scale * lr
        center = np.clip(center, 0, [width, height])
        size = np.clip(size, MIN_SIZE, [max(width, MIN_SIZE), max(height, MIN_SIZE)])
        return center, size
