"""A tiny random Segment Anything model for the SAM tests (tests/test_sam_*.py) and
bench/cpu.py: the real segment_anything classes at toy sizes, so checkpoints it writes go
through the same loading code as the official sam_vit_b/l/h."""

from __future__ import annotations

from pathlib import Path

from smaf.sam import SamArchitecture

#: 64 px input (8 px patches, an 8x8 grid), width 32, two blocks (one windowed, one global).
TINY_SAM = SamArchitecture(
    name="custom",
    embed_dim=32,
    depth=2,
    num_heads=2,
    global_attn_indexes=(1,),
    window_size=4,
    patch_size=8,
    image_size=64,
    mlp_ratio=2.0,
    qkv_bias=True,
    use_rel_pos=True,
    prompt_dim=32,
    mask_in_chans=8,
    decoder_depth=1,
    decoder_mlp_dim=64,
    num_multimask_outputs=3,
    iou_head_depth=2,
    iou_head_hidden_dim=32,
)


def write_tiny_sam(path: Path, arch: SamArchitecture = TINY_SAM, seed: int = 0) -> Path:
    """Save a randomly initialised SAM of ``arch`` as a plain state dict (like Meta's files)."""
    import torch

    from smaf.sam import build_sam

    torch.manual_seed(seed)
    torch.save(build_sam(arch).state_dict(), path)
    return path
