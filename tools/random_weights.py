"""Randomly initialised checkpoints of the real SAM, SAM 2 and torchvision detection architectures.

For tests and benchmarks: no SAM-family or torchvision weights can be downloaded here, but the functions' loading code, request handling and
timings do not depend on the weights' values. These builders use the packages' own model classes and save
checkpoints in the official layouts, which the functions then load through ``MODEL_PATH``.

``SMALL_SAM`` and ``SMALL_SAM2_OVERRIDES`` are reduced encoders of the same classes, fast enough for tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

SMALL_SAM = (64, 2, 2, (1,))  # ViT encoder: embed dim, depth, heads, global attention blocks
SMALL_SAM2_OVERRIDES = [
    "++model.image_encoder.trunk.embed_dim=32",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
    "++model.memory_attention.num_layers=1",
]


def sam_checkpoint(path: Path, model_type: str | None = None, seed: int = 0) -> Path:
    """A Segment Anything checkpoint (a plain state dict, as the official files) with random weights:
    of ``model_type`` (vit_b, vit_l, vit_h) or, by default, the small ``SMALL_SAM`` encoder."""
    from segment_anything.build_sam import _build_sam, sam_model_registry

    torch.manual_seed(seed)
    if model_type:
        model = sam_model_registry[model_type](checkpoint=None)
    else:
        embed_dim, depth, heads, global_blocks = SMALL_SAM
        model = _build_sam(embed_dim, depth, heads, list(global_blocks), checkpoint=None)
    torch.save(model.state_dict(), path)
    return Path(path)


def sam2_checkpoint(path: Path, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml",
                    overrides: list[str] | None = None, seed: int = 0) -> Path:
    """A SAM 2.1 checkpoint (``{"model": state_dict}``, as the official files) with random weights."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(config, None, device="cpu", hydra_overrides_extra=list(overrides or []))
    torch.save({"model": model.state_dict()}, path)
    return Path(path)


def torchvision_checkpoint(path: Path, builder, seed: int = 0, **arguments) -> Path:
    """A torchvision detection model's state dict (the official files' layout) with random weights.

    ``builder`` is e.g. ``torchvision.models.detection.maskrcnn_resnet50_fpn_v2``; ``arguments`` such as
    ``num_classes`` go to it.
    """
    torch.manual_seed(seed)
    model = builder(weights=None, weights_backbone=None, **arguments)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def siammask_checkpoint(path: Path, seed: int = 0) -> Path:
    """A SiamMask-sharp checkpoint in the official ``SiamMask_DAVIS.pth`` layout (a plain state dict) with random
    weights; batch-norm statistics are randomised too, so that every branch sees non-trivial inputs."""
    from common.models.folder import load_module

    from .config import ROOT

    net = load_module(ROOT / "functions" / "pytorch" / "foolwood" / "siammask" / "nuclio", "siammask_net")
    torch.manual_seed(seed)
    model = net.SiamMask()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


# ---------------------------------------------------------------- text-prompted detectors (Hugging Face)

def _byte_symbols() -> list[str]:
    """The printable stand-ins byte-level BPE uses for the 256 byte values, in CLIP's vocabulary order: the
    printable bytes as themselves, then the other bytes as the characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def clip_tokenizer(max_length: int = 77):
    """CLIP's tokenizer with the real CLIP BPE vocabulary (49408 tokens), built from the
    ``bpe_simple_vocab_16e6.txt.gz`` that the ``open_clip_torch`` wheel ships (installed without its
    dependencies, never imported). A real vocabulary, not a toy one: OWL models treat a query whose first
    token has id 0 as padding, and real phrases then tokenize as they do with the hub's tokenizer."""
    import gzip
    import importlib.util

    from transformers import CLIPTokenizer

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed (requirements-nodeps.txt): no CLIP vocabulary")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, pad_token="!",
                         model_max_length=max_length)


def owlv2_folder(path: Path, seed: int = 0, image_size: int = 128, full: bool = False) -> Path:
    """A small OWLv2 (``Owlv2ForObjectDetection``: 2-layer ViT and text encoders of width 32, 16-pixel patches
    on ``image_size`` inputs) with random weights and its processor, as ``save_pretrained`` writes them; with
    ``full``, the real base-patch16 architecture at 960 pixels (for benchmarks)."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    torch.manual_seed(seed)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = Owlv2Config(text_config={**small, "vocab_size": 49408, "max_position_embeddings": 16},
                         vision_config={**small, "image_size": image_size, "patch_size": 16}, projection_dim=32)
    if full:
        config, image_size = Owlv2Config(), Owlv2Config().vision_config.image_size
    Owlv2ForObjectDetection(config).save_pretrained(path)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": image_size, "width": image_size}),
                               tokenizer=clip_tokenizer(16))  # OWL's text encoder: 16 positions
    processor.save_pretrained(path)
    return path


def sam3_folder(path: Path, seed: int = 0, image_size: int = 224, full: bool = False) -> Path:
    """A small SAM 3 (``Sam3Model``: 2-layer ViT of width 32 on ``image_size`` inputs with 14-pixel patches, a
    2-layer text encoder, one-layer DETR encoder and decoder with 5 queries, a 2-stage mask decoder) with
    random weights and its processor (``Sam3Processor``, CLIP's tokenizer), as ``save_pretrained`` writes them;
    with ``full``, the real architecture at 1008 pixels (for benchmarks)."""
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    torch.manual_seed(seed)
    small = {"num_attention_heads": 4, "intermediate_size": 64}
    config = Sam3Config(
        vision_config={"backbone_config": {"model_type": "sam3_vit_model", "hidden_size": 32, "num_hidden_layers": 2,
                                           **small,
                                           "image_size": image_size, "patch_size": 14, "window_size": 8,
                                           "global_attn_indexes": [0, 1]},
                       "fpn_hidden_size": 32, "scale_factors": [2.0, 1.0]},
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "projection_dim": 32,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32},
        geometry_encoder_config={"hidden_size": 32, "num_layers": 1, **small},
        detr_encoder_config={"hidden_size": 32, "num_layers": 1, **small},
        detr_decoder_config={"hidden_size": 32, "num_layers": 1, "num_queries": 5, **small},
        mask_decoder_config={"hidden_size": 32, "num_upsampling_stages": 2},
    )
    if full:
        config, image_size = Sam3Config(), Sam3Config().vision_config.image_size
    Sam3Model(config).save_pretrained(path)
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(size={"height": image_size, "width": image_size}),
                              tokenizer=clip_tokenizer(32))
    processor.save_pretrained(path)
    return path
