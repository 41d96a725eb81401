"""SAM 2.1 video tracking: the first frame's shape is the prompt, later frames follow with SAM 2's memory.

Each object's memory bank lives in the state store, holding exactly what SAM 2 reads for the next frame:

- the conditioning (prompt) frame's memory features and object pointer, stored once per track;
- the memory features of the recent frames SAM 2 attends to (``num_maskmem - 1``, 6 for SAM 2.1), each
  stored once under its own token, which the step state lists;
- the object pointers of the last ``max_obj_ptrs_in_encoder - 1`` frames (15), inside the step state.

A step runs what ``SAM2VideoPredictor.propagate_in_video`` runs for one frame, with the predictor's own
preprocessing, memory dtype (bfloat16) and post-processing, so a track continued from the store matches the
package's in-memory video predictor exactly. Frames are numbered per track (the prompt frame is 0); CVAT does
not say which video frame it sends.

Model size, checkpoint and config overrides come from the environment (see :mod:`common.models.sam2_models`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import PIL.Image
from sam2.build_sam import build_sam2_video_predictor

from common.core.errors import RequestError
from common.core.image import Image
from common.core.results import Region
from common.core.settings import polygon_epsilon
from common.models import sam2_models
from common.models.tracking import Tracker, recall, remember
from common.runtime.backends import torch_device
from common.runtime.state_store import StateGone

FAR = 1 << 30  # SAM 2 reads a video's length only to cap its object pointers; a track has no known end
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]  # as sam2's frame loader
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def has_hole_filling() -> bool:
    """Whether sam2 was built with its optional CUDA extension (used only to fill small holes in masks)."""
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as NumPy, bfloat16 kept bit for bit as int16 (NumPy has no bfloat16)."""
    tensor = tensor.detach().cpu()
    return (tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor).numpy()


def from_array(array: np.ndarray, bfloat16: bool, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return (tensor.view(torch.bfloat16) if bfloat16 else tensor).to(device)


class ModelHandler(Tracker):
    function_dir = Path(__file__).resolve().parent
    settings_class = sam2_models.Sam2Settings
    work_bytes_per_pixel = 38  # measured: the frame's tensors and the object's mask at the frame's size

    def __init__(self, settings=None, log=None, store=None):
        super().__init__(settings, log, store)
        self.device = torch_device()
        self.predictor, self.model_id = sam2_models.load(build_sam2_video_predictor, self.device, self.settings)
        if self.predictor.fill_hole_area > 0 and not has_hole_filling():
            self.predictor.fill_hole_area = 0  # what sam2 falls back to anyway, without a warning per frame
        self.pointer_frames = self.predictor.max_obj_ptrs_in_encoder - 1
        self.frame: tuple[str, tuple] | None = None  # (image digest, (input, backbone output)) of the last frame

    # ------------------------------------------------------------ frames and sessions

    def backbone(self, image: Image) -> tuple[torch.Tensor, dict]:
        """The model input and image-encoder output for ``image``, computed once per frame for all objects."""
        if self.frame is None or self.frame[0] != image.digest:
            size = self.predictor.image_size
            resized = np.asarray(PIL.Image.fromarray(image.rgb).resize((size, size)))  # as sam2's frame loader
            frame = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
            frame = ((frame - MEAN) / STD).to(self.device)[None]
            self.frame = (image.digest, (frame, self.predictor.forward_image(frame)))
        return self.frame[1]

    def session(self, image: Image, frame_idx: int) -> dict:
        """A one-frame inference state of ``SAM2VideoPredictor`` for ``image`` as frame ``frame_idx``."""
        width, height = image.size
        return {
            "images": {}, "num_frames": FAR, "video_height": height, "video_width": width,
            "device": self.device, "storage_device": self.device,
            "offload_video_to_cpu": False, "offload_state_to_cpu": False,
            "cached_features": {frame_idx: self.backbone(image)}, "constants": {},
            "point_inputs_per_obj": {}, "mask_inputs_per_obj": {},
            "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
            "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
        }

    def memory_frames(self, frame_idx: int) -> set[int]:
        """The earlier frames whose memory features SAM 2 reads when it tracks frame ``frame_idx``."""
        stride = self.predictor.memory_temporal_stride_for_eval
        frames = {frame_idx - 1}
        for t_rel in range(2, self.predictor.num_maskmem):
            frames.add(((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride)
        return {f for f in frames if f > 0}

    # ------------------------------------------------------------ the store

    def save_memory(self, output: dict) -> str:
        features = output["maskmem_features"]
        return self.store.put({"features": to_array(features), "pointer": to_array(output["obj_ptr"])},
                              {"kind": "sam2-memory", "bfloat16": features.dtype == torch.bfloat16})

    def load_memories(self, tokens: list[str], whats: list[str]) -> list[dict]:
        """Memory entries, read from the store in one round trip."""
        return [self.memory(found, what) for found, what in zip(self.store.get_many(tokens, whats), whats)]

    def memory(self, found: tuple[dict, dict], what: str) -> dict:
        arrays, meta = found
        if meta.get("kind") != "sam2-memory":
            raise StateGone(f"{what} is damaged (not a SAM 2 memory); start the track again")
        features = from_array(arrays["features"], meta["bfloat16"], self.device)
        position = self.predictor.memory_encoder.position_encoding(features)  # float32, the same for every frame
        return {"maskmem_features": features, "maskmem_pos_enc": [position],
                "obj_ptr": from_array(arrays["pointer"], False, self.device)}

    def save_step(self, state: dict, pointers: np.ndarray, last: Region) -> str:
        """A step state; ``last`` is the region shown when the object is lost on a later frame."""
        arrays, state["last"] = remember(last)
        return self.store.put({"pointers": pointers, **arrays}, state)

    # ------------------------------------------------------------ tracking

    @torch.inference_mode()
    def start(self, image: Image, region: Region) -> str:
        session = self.session(image, 0)
        if region.type == "rectangle":
            self.predictor.add_new_points_or_box(session, frame_idx=0, obj_id=0, box=list(region.box))
        else:
            mask = region.to_mask(*image.size)
            if not mask.any():
                raise RequestError(f"the {region.type} to track covers no pixel of the image")
            self.predictor.add_new_mask(session, frame_idx=0, obj_id=0, mask=mask)
        self.predictor.propagate_in_video_preflight(session)  # encodes the prompt frame's memory
        output = session["output_dict_per_obj"][0]["cond_frame_outputs"][0]
        state = {"kind": "sam2-step", "model": self.model_id, "track": self.save_memory(output), "frame": 0,
                 "memory": [], "pointer_frames": [], "image_size": list(image.size), "type": region.type}
        return self.save_step(state, np.zeros((0, *output["obj_ptr"].shape[1:]), np.float32), region)

    @torch.inference_mode()
    def advance(self, image: Image, token: str, what: str) -> tuple[np.ndarray, Region, str]:
        """Track the object of state ``token`` into ``image``: its mask logits at the image's size (H×W), its
        region and the new state's token."""
        arrays, state = self.load_step(token, what, "sam2-step", image)
        if state["model"] != self.model_id:
            raise StateGone(f"{what} was made by another model ({state['model']}); start the track again")
        frame_idx = state["frame"] + 1
        session = self.session(image, frame_idx)
        self.predictor._obj_id_to_idx(session, 0)  # creates the object's (empty) output dicts
        outputs = session["output_dict_per_obj"][0]
        memories = self.load_memories([state["track"]] + [key for _, key in state["memory"]],
                                       [f"{what} (its prompt frame)"] + [f"{what} (frame {f} of its memory)"
                                                                         for f, _ in state["memory"]])
        outputs["cond_frame_outputs"][0] = memories[0]
        for f, pointer in zip(state["pointer_frames"], arrays["pointers"]):
            outputs["non_cond_frame_outputs"][f] = {"obj_ptr": torch.from_numpy(pointer[None]).to(self.device)}
        for (f, _), memory in zip(state["memory"], memories[1:]):
            outputs["non_cond_frame_outputs"][f] = memory
        output, masks = self.predictor._run_single_frame_inference(
            inference_state=session, output_dict=outputs, frame_idx=frame_idx, batch_size=1,
            is_init_cond_frame=False, point_inputs=None, mask_inputs=None, reverse=False, run_mem_encoder=True)
        logits = self.predictor._get_orig_video_res_output(session, masks)[1][0, 0].float().cpu().numpy()

        region = Region.from_mask(logits > 0, state["type"], polygon_epsilon())
        if region is None:  # the object is lost (occluded, out of view): CVAT's tools need a shape, keep the last
            region = recall(state["type"], state["last"], arrays)
        keep = self.memory_frames(frame_idx + 1)
        memory = [[f, key] for f, key in state["memory"] if f in keep]
        if frame_idx in keep:
            memory.append([frame_idx, self.save_memory(output)])
        pointers = np.concatenate([arrays["pointers"], to_array(output["obj_ptr"])])[-self.pointer_frames:]
        state = {**state, "frame": frame_idx, "memory": memory,
                 "pointer_frames": (state["pointer_frames"] + [frame_idx])[-self.pointer_frames:]}
        return logits, region, self.save_step(state, pointers, region)

    def step(self, image: Image, token: str, what: str) -> tuple[Region, str]:
        _, region, token = self.advance(image, token, what)
        return region, token
