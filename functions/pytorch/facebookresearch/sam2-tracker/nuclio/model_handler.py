"""SAM 2.1 video tracking: the first frame's shape is the prompt, later frames follow with SAM 2's memory.

Each object's memory bank lives in the state store, holding exactly what SAM 2 reads for the next frame:

- the conditioning (prompt) frame's memory features and object pointer, stored once per track;
- the memory features of the recent frames SAM 2 attends to (``num_maskmem - 1``, 6 for SAM 2.1), each
  stored once under its own token, which the step state lists;
- the object pointers of the last ``max_obj_ptrs_in_encoder - 1`` frames (15), inside the step state.

A step runs what ``SAM2VideoPredictor.propagate_in_video`` runs for one frame, with the predictor's memory
dtype (bfloat16) and post-processing, so a track continued from the store matches the package's in-memory
video predictor exactly (with ``PREPROCESS=package``, the predictor's own Pillow frame resize; by default the
frame is resized on the model's device, see :mod:`common.models.torch_frames`). Frames are numbered per track
(the prompt frame is 0); CVAT does not say which video frame it sends.

The objects of one request that are at the same point of their tracks (same frame number, same memory
frames: objects started together) go through SAM 2 as one batch; the image encoder runs once per frame.
Masks stay on the device until they are cut to their boxes.

Model size, checkpoint and config overrides come from the environment (see :mod:`common.models.sam2_models`).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import PIL.Image
from sam2.build_sam import build_sam2_video_predictor

from common.core.errors import RequestError
from common.core.image import Image
from common.core.results import Region
from common.core.settings import polygon_epsilon
from common.models import sam2_models, torch_frames
from common.models.tracking import Tracker, recall, remember
from common.runtime.backends import torch_device
from common.runtime.state_store import StateGone

FAR = 1 << 30  # SAM 2 reads a video's length only to cap its object pointers; a track has no known end
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # as sam2's frame loader


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


def from_arrays(arrays: list[np.ndarray], bfloat16: bool, device: torch.device) -> torch.Tensor:
    """Stored arrays (1×... each) as one batch on ``device``."""
    tensor = torch.from_numpy(np.concatenate(arrays) if len(arrays) > 1 else np.array(arrays[0]))
    return (tensor.view(torch.bfloat16) if bfloat16 else tensor).to(device)


class ModelHandler(Tracker):
    settings: sam2_models.Sam2Settings
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
            if self.settings.on_device:
                frame = torch_frames.resized(torch_frames.pixels(image.rgb, self.device), (size, size), "bicubic")
                frame = frame / 255
            else:  # sam2's frame loader: Pillow's resize (bicubic), then float64 NumPy
                resized = np.asarray(PIL.Image.fromarray(image.rgb).resize((size, size)))
                frame = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()[None].to(self.device)
            frame = torch_frames.normalized(frame, MEAN, STD)
            with self.settings.autocasting(self.device):
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

    @staticmethod
    def memory_entries(output: dict) -> tuple[list[tuple[dict, dict]], np.ndarray]:
        """A SAM 2 output's memory entry for each object of its batch (arrays, metadata), and its object
        pointers (float32, whatever the autocast)."""
        features, pointers = output["maskmem_features"], to_array(output["obj_ptr"].float())
        meta = {"kind": "sam2-memory", "bfloat16": features.dtype == torch.bfloat16}
        features = to_array(features)
        return [({"features": features[j:j + 1], "pointer": pointers[j:j + 1]}, meta)
                for j in range(len(pointers))], pointers

    def load_memories(self, tokens: list[str], whats: list[str]) -> list[tuple[dict, dict]]:
        """Memory entries (arrays, metadata), read from the store in one round trip."""
        found = self.store.get_many(tokens, whats)
        for (_, meta), what in zip(found, whats):
            if meta.get("kind") != "sam2-memory":
                raise StateGone(f"{what} is damaged (not a SAM 2 memory); start the track again")
        return found

    def memory(self, entries: list[tuple[dict, dict]]) -> dict:
        """One frame's memory entries of a batch of objects, as SAM 2 reads them."""
        features = from_arrays([arrays["features"] for arrays, _ in entries], entries[0][1]["bfloat16"], self.device)
        position = self.predictor.memory_encoder.position_encoding(features)  # float32, the same for every frame
        return {"maskmem_features": features, "maskmem_pos_enc": [position],
                "obj_ptr": from_arrays([arrays["pointer"] for arrays, _ in entries], False, self.device)}

    # ------------------------------------------------------------ tracking

    @torch.inference_mode()
    def start(self, image: Image, region: Region) -> str:
        session = self.session(image, 0)
        with self.settings.autocasting(self.device):
            if region.type == "rectangle":
                self.predictor.add_new_points_or_box(session, frame_idx=0, obj_id=0, box=list(region.box))
            else:
                mask = region.to_mask(*image.size)
                if not mask.any():
                    raise RequestError(f"the {region.type} to track covers no pixel of the image")
                self.predictor.add_new_mask(session, frame_idx=0, obj_id=0, mask=mask)
            self.predictor.propagate_in_video_preflight(session)  # encodes the prompt frame's memory
        output = session["output_dict_per_obj"][0]["cond_frame_outputs"][0]
        track = self.store.put(*self.memory_entries(output)[0][0])
        state = {"kind": "sam2-step", "model": self.model_id, "track": track, "frame": 0,
                 "memory": [], "pointer_frames": [], "image_size": list(image.size), "type": region.type}
        arrays, state["last"] = remember(region)
        pointers = np.zeros((0, *output["obj_ptr"].shape[1:]), np.float32)
        return self.store.put({"pointers": pointers, **arrays}, state, near=track)

    @torch.inference_mode()
    def advance_many(self, image: Image, tokens: list[str], whats: list[str]) -> list[tuple[torch.Tensor, Region,
                                                                                            str]]:
        """Track the objects of states ``tokens`` into ``image``: per object its mask logits at the image's size
        (H×W, on the model's device), its region and the new state's token. Objects at the same point of their
        tracks are stepped as one batch."""
        steps = self.load_steps(tokens, whats, "sam2-step", image)
        for (_, state), what in zip(steps, whats):
            if state["model"] != self.model_id:
                raise StateGone(f"{what} was made by another model ({state['model']}); start the track again")
        # every memory entry of every object in one round trip
        wanted = [(i, state["track"], f"{whats[i]} (its prompt frame)") for i, (_, state) in enumerate(steps)]
        wanted += [(i, key, f"{whats[i]} (frame {f} of its memory)")
                   for i, (_, state) in enumerate(steps) for f, key in state["memory"]]
        entries: dict[int, list] = {i: [] for i in range(len(steps))}
        for (i, _, _), entry in zip(wanted, self.load_memories([t for _, t, _ in wanted], [w for _, _, w in wanted])):
            entries[i].append(entry)
        groups: dict[tuple, list[int]] = {}
        for i, (_, state) in enumerate(steps):
            layout = (state["frame"], tuple(f for f, _ in state["memory"]), tuple(state["pointer_frames"]))
            groups.setdefault(layout, []).append(i)
        results: dict[int, tuple[torch.Tensor, Region, str]] = {}
        for members in groups.values():
            found = self.track_batch(image, [steps[i] for i in members], [entries[i] for i in members])
            results.update(zip(members, found))
        return [results[i] for i in range(len(steps))]

    def track_batch(self, image: Image, steps: list[tuple[dict, dict]], entries: list[list]) -> list[tuple]:
        """One SAM 2 step of objects at the same point of their tracks, then each object's new state."""
        state = steps[0][1]
        frame_idx = state["frame"] + 1
        session = self.session(image, frame_idx)
        self.predictor._obj_id_to_idx(session, 0)  # creates the (one, batched) object's empty output dicts
        outputs = session["output_dict_per_obj"][0]
        outputs["cond_frame_outputs"][0] = self.memory([found[0] for found in entries])
        pointers = from_arrays([arrays["pointers"][None] for arrays, _ in steps], False, self.device)
        for k, f in enumerate(state["pointer_frames"]):
            outputs["non_cond_frame_outputs"][f] = {"obj_ptr": pointers[:, k]}
        for k, (f, _) in enumerate(state["memory"]):
            outputs["non_cond_frame_outputs"][f] = self.memory([found[k + 1] for found in entries])
        with self.settings.autocasting(self.device):
            output, masks = self.predictor._run_single_frame_inference(
                inference_state=session, output_dict=outputs, frame_idx=frame_idx, batch_size=len(steps),
                is_init_cond_frame=False, point_inputs=None, mask_inputs=None, reverse=False, run_mem_encoder=True)
            logits = self.predictor._get_orig_video_res_output(session, masks)[1][:, 0].float()
        keep = self.memory_frames(frame_idx + 1)
        memory = [[f, key] for f, key in state["memory"] if f in keep]
        new_memory, pointer = self.memory_entries(output)
        tracks = [state["track"] for _, state in steps]  # each object's keys stay in its track's slot
        memory_tokens = self.store.put_many(*((new_memory, tracks) if frame_idx in keep else ([], [])))
        results, new_states = [], []
        for j, ((arrays, state), mask) in enumerate(zip(steps, torch_frames.masks_of(logits))):
            region = None if mask is None else Region.from_mask(mask, state["type"], polygon_epsilon())
            if region is None:  # the object is lost (occluded, out of view): CVAT's tools need a shape, keep the last
                region = recall(state["type"], state["last"], arrays)
            last_arrays, last = remember(region)
            new_state = {**state, "frame": frame_idx, "last": last,
                         "memory": memory + ([[frame_idx, memory_tokens[j]]] if memory_tokens else []),
                         "pointer_frames": (state["pointer_frames"] + [frame_idx])[-self.pointer_frames:]}
            step_pointers = np.concatenate([arrays["pointers"], pointer[j:j + 1]])[-self.pointer_frames:]
            new_states.append(({"pointers": step_pointers, **last_arrays}, new_state))
            results.append((logits[j], region))
        tokens = self.store.put_many(new_states, tracks)
        return [(logits_j, region, token) for (logits_j, region), token in zip(results, tokens)]

    def advance(self, image: Image, token: str, what: str) -> tuple[np.ndarray, Region, str]:
        """:meth:`advance_many` for one object, its logits as NumPy."""
        logits, region, token = self.advance_many(image, [token], [what])[0]
        return logits.cpu().numpy(), region, token

    def step_many(self, image: Image, tokens: list[str], whats: list[str]) -> list[tuple[Region, str]]:
        return [(region, token) for _, region, token in self.advance_many(image, tokens, whats)]

    def step(self, image: Image, token: str, what: str) -> tuple[Region, str]:
        return self.step_many(image, [token], [what])[0]
