"""Segment Anything models: load an official or test-made checkpoint, its architecture read
from the state dict's shapes.

The official checkpoints (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``,
``sam_vit_h_4b8939.pth``, :data:`SAM_DOWNLOADS`) are plain state dicts of
``segment_anything.modeling.Sam``. :func:`sam_architecture` reads every size the constructor
needs from the tensors themselves (embed dim and patch size from the patch embedding, depth from
the block count, heads from the relative-position tables, global-attention blocks from which of
those tables span the whole grid, input size from ``pos_embed``), so ``vit_b`` / ``vit_l`` /
``vit_h`` and a tiny random SAM that a test writes go through the same code. Two sizes leave no
trace in the shapes and are SAM's fixed values: the mask decoder's 8 attention heads and the
pixel mean / std (non-persistent buffers).

``segment-anything`` is an optional dependency (``pip install 'smaf[sam]'``), imported on first
use: without it every entry point raises one :class:`~smaf.errors.SmafError` line saying so.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from smaf.errors import SmafError

__all__ = [
    "SAM_DOWNLOADS",
    "SAM_INSTALL_HINT",
    "SamArchitecture",
    "build_sam",
    "load_sam",
    "require_segment_anything",
    "sam_architecture",
]

SAM_INSTALL_HINT = "pip install 'smaf[sam]'"

#: The official SAM checkpoints as download items (config.yaml ``downloads:`` format). Meta
#: publishes no checksum; the md5 below is the one their file names carry the first 6 hex
#: digits of, as quoted identically by many downstream projects (no sha256 is published).
SAM_DOWNLOADS: dict[str, dict[str, str]] = {
    "sam_vit_b_01ec64.pth": {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "md5": "01ec64d29a2fca3f0661936605ae66f8",
    },
    "sam_vit_l_0b3195.pth": {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "md5": "0b3195507c641ddb6910d2bb5adee89c",
    },
    "sam_vit_h_4b8939.pth": {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "md5": "4b8939a88964f0f4ff5f5b2642c598a6",
    },
}

# (embed dim, depth) -> official model name; heads and global blocks follow build_sam.py.
_OFFICIAL = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
_OFFICIAL_HEADS = {"vit_b": 12, "vit_l": 16, "vit_h": 16}
_DECODER_HEADS = 8  # TwoWayTransformer's heads in every SAM: not visible in the weights' shapes
_KEY = "image_encoder.patch_embed.proj.weight"


def require_segment_anything() -> Any:
    """The ``segment_anything`` module, or one SmafError line saying how to install it."""
    try:
        import segment_anything
    except ImportError:
        raise SmafError(
            f"SAM refinement needs the segment-anything package: {SAM_INSTALL_HINT}"
        ) from None
    return segment_anything


@dataclass(frozen=True)
class SamArchitecture:
    """Every size ``Sam(ImageEncoderViT, PromptEncoder, MaskDecoder)`` is built from."""

    name: str  # "vit_b" / "vit_l" / "vit_h", or "custom" for anything else
    embed_dim: int  # image encoder width (vit_b 768, vit_l 1024, vit_h 1280)
    depth: int  # image encoder blocks (12 / 24 / 32)
    num_heads: int  # image encoder heads (12 / 16 / 16)
    global_attn_indexes: tuple[int, ...]  # blocks with global attention ((2, 5, 8, 11) for vit_b)
    window_size: int  # windowed blocks' window (14); 0 when every block is global
    patch_size: int  # 16
    image_size: int  # the encoder's input side (1024)
    mlp_ratio: float  # 4.0
    qkv_bias: bool
    use_rel_pos: bool
    prompt_dim: int  # neck / prompt / decoder width (256)
    mask_in_chans: int  # prompt encoder's mask channels (16)
    decoder_depth: int  # TwoWayTransformer layers (2)
    decoder_mlp_dim: int  # 2048
    num_multimask_outputs: int  # 3
    iou_head_depth: int  # 3
    iou_head_hidden_dim: int  # 256


def _shape(sd: dict[str, Any], key: str, what: str) -> tuple[int, ...]:
    if key not in sd:
        raise SmafError(f"{what} is not a Segment Anything checkpoint: it has no {key!r}")
    return tuple(sd[key].shape)


def sam_architecture(sd: dict[str, Any], what: str = "the checkpoint") -> SamArchitecture:
    """Read a SAM state dict's architecture from its tensor shapes (see the module docstring)."""
    embed_dim, _, patch, _ = _shape(sd, _KEY, what)
    grid = _shape(sd, "image_encoder.pos_embed", what)[1]
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    depth = len(blocks)
    if depth == 0 or blocks != set(range(depth)):
        raise SmafError(f"{what} is not a Segment Anything checkpoint: no image encoder blocks")
    use_rel_pos = "image_encoder.blocks.0.attn.rel_pos_h" in sd
    global_idx: list[int] = []
    window = 0
    if use_rel_pos:
        # rel_pos_h is [2 * side - 1, head_dim]: side = the grid for global blocks, the window
        # for windowed ones. Heads = width / head_dim.
        sides = [
            (_shape(sd, f"image_encoder.blocks.{i}.attn.rel_pos_h", what)[0] + 1) // 2
            for i in range(depth)
        ]
        head_dim = _shape(sd, "image_encoder.blocks.0.attn.rel_pos_h", what)[1]
        num_heads = embed_dim // head_dim
        global_idx = [i for i, s in enumerate(sides) if s == grid]
        windows = {s for s in sides if s != grid}
        if len(windows) > 1:
            raise SmafError(f"{what}: image encoder blocks with different window sizes {windows}")
        window = windows.pop() if windows else 0
    else:
        num_heads = _OFFICIAL_HEADS.get(
            _OFFICIAL.get((embed_dim, depth), ""), max(1, embed_dim // 64)
        )
    name = _OFFICIAL.get((embed_dim, depth), "custom")
    if name != "custom" and grid * patch != 1024:
        name = "custom"
    decoder_layers = {
        int(m.group(1))
        for k in sd
        if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", k))
    }
    iou_layers = {
        int(m.group(1))
        for k in sd
        if (m := re.match(r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.", k))
    }
    prompt_dim = _shape(sd, "image_encoder.neck.0.weight", what)[0]
    return SamArchitecture(
        name=name,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        global_attn_indexes=tuple(global_idx),
        window_size=window,
        patch_size=patch,
        image_size=grid * patch,
        mlp_ratio=_shape(sd, "image_encoder.blocks.0.mlp.lin1.weight", what)[0] / embed_dim,
        qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in sd,
        use_rel_pos=use_rel_pos,
        prompt_dim=prompt_dim,
        mask_in_chans=_shape(sd, "prompt_encoder.mask_downscaling.3.weight", what)[0],
        decoder_depth=len(decoder_layers),
        decoder_mlp_dim=_shape(sd, "mask_decoder.transformer.layers.0.mlp.lin1.weight", what)[0],
        num_multimask_outputs=_shape(sd, "mask_decoder.mask_tokens.weight", what)[0] - 1,
        iou_head_depth=len(iou_layers),
        iou_head_hidden_dim=_shape(sd, "mask_decoder.iou_prediction_head.layers.0.weight", what)[0],
    )


def build_sam(arch: SamArchitecture) -> Any:
    """A randomly initialised ``segment_anything.modeling.Sam`` of architecture ``arch``.

    The same construction as segment_anything's ``_build_sam`` with every size taken from
    ``arch`` (so an official architecture gives the official model).
    """
    require_segment_anything()
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    grid = arch.image_size // arch.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=arch.image_size,
            patch_size=arch.patch_size,
            embed_dim=arch.embed_dim,
            depth=arch.depth,
            num_heads=arch.num_heads,
            mlp_ratio=arch.mlp_ratio,
            out_chans=arch.prompt_dim,
            qkv_bias=arch.qkv_bias,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=arch.use_rel_pos,
            window_size=arch.window_size,
            global_attn_indexes=arch.global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.prompt_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=_DECODER_HEADS,
            ),
            transformer_dim=arch.prompt_dim,
            iou_head_depth=arch.iou_head_depth,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise SmafError(
            f"SAM checkpoint {path} not found: set sam.checkpoint to a file or to one of the "
            f"download items {', '.join(SAM_DOWNLOADS)}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types (IndexError, UnpicklingError, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SmafError(
            f"{path} is not a Segment Anything checkpoint (torch cannot read it: {reason[:200]})"
        ) from None
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict) and _KEY in obj[wrapper]:
                obj = obj[wrapper]
    if not isinstance(obj, dict) or _KEY not in obj:
        raise SmafError(
            f"{path} is not a Segment Anything checkpoint (no {_KEY!r}): use sam_vit_b/l/h "
            "from segment-anything's release"
        )
    return obj


def load_sam(
    path: str | os.PathLike[str], model: str | None = None, device: str = "cpu"
) -> tuple[Any, SamArchitecture]:
    """Load a SAM checkpoint: ``(model in eval mode on device, its architecture)``.

    ``model`` ("vit_b" / "vit_l" / "vit_h", config ``sam.model``) is optional: the architecture
    is read from the state dict; when given it must agree with it.
    """
    require_segment_anything()
    path = Path(path)
    sd = _read_state_dict(path)
    arch = sam_architecture(sd, what=str(path))
    if model is not None and model != arch.name:
        raise SmafError(
            f"sam.model is {model!r} but {path} holds a {arch.name} SAM (width "
            f"{arch.embed_dim}, {arch.depth} blocks): remove sam.model or fix it"
        )
    sam = build_sam(arch)
    try:
        result = sam.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise SmafError(
            f"{path} is not a Segment Anything checkpoint of the expected layout "
            f"({str(exc).strip().splitlines()[-1].strip()[:200]})"
        ) from None
    missing = [k for k in result.missing_keys if not k.startswith("pixel_")]
    if missing or result.unexpected_keys:
        odd = (missing or result.unexpected_keys)[0]
        raise SmafError(
            f"{path} is not a Segment Anything checkpoint of the expected layout "
            f"({len(missing)} missing and {len(result.unexpected_keys)} unexpected tensors, "
            f"e.g. {odd!r})"
        )
    return sam.to(device), arch


def architecture_dict(arch: SamArchitecture) -> dict[str, Any]:
    """``arch`` as a JSON-able dict (for logs and fingerprints)."""
    d = asdict(arch)
    d["global_attn_indexes"] = list(arch.global_attn_indexes)
    return d
