"""A tiny random OpenAI-format ViT CLIP state dict, the same bits on every run.

Used by the CLIP tests and to make the fidelity fixtures (tests/fixtures/clip_es_voc.npz) with
CLIP-ES's own code; ``python tests/clip_checkpoint.py out.pt`` writes the file CLIP-ES loaded.
Every tensor is float16 (as OpenAI's checkpoints store their weights), so a loader that casts to
float32 and CLIP-ES's, which rounds some weights to float16 first, see the same values. The
init follows CLIP's (std width^-0.5 etc.) so that the random maps are not degenerate.
"""

from __future__ import annotations

import hashlib
import math
import sys

import torch

#: Architecture of the fixture model: 9 vision blocks (so the "last 8" attention mean drops
#: one), patch 16 on a 7x7 pretraining grid (interpolation always runs), text width 64.
TINY_CLIP = {
    "vision_width": 64,
    "vision_layers": 9,
    "patch": 16,
    "grid": 7,
    "text_width": 64,
    "text_layers": 2,
    "embed_dim": 32,
    "vocab_size": 49408,  # the BPE vocabulary's size: every token id must have a row
    "context_length": 77,
}


def _blocks(prefix: str, width: int, layers: int, randn, state: dict) -> None:
    attn_std, proj_std, fc_std = (
        width**-0.5,
        width**-0.5 * (2 * layers) ** -0.5,
        (2 * width) ** -0.5,
    )
    for i in range(layers):
        p = f"{prefix}.resblocks.{i}."
        state[p + "attn.in_proj_weight"] = randn(3 * width, width, std=attn_std)
        state[p + "attn.in_proj_bias"] = randn(3 * width, std=0.02)
        state[p + "attn.out_proj.weight"] = randn(width, width, std=proj_std)
        state[p + "attn.out_proj.bias"] = randn(width, std=0.02)
        for ln in ("ln_1", "ln_2"):
            state[p + ln + ".weight"] = 1 + randn(width, std=0.1)
            state[p + ln + ".bias"] = randn(width, std=0.1)
        state[p + "mlp.c_fc.weight"] = randn(4 * width, width, std=fc_std)
        state[p + "mlp.c_fc.bias"] = randn(4 * width, std=0.02)
        state[p + "mlp.c_proj.weight"] = randn(width, 4 * width, std=proj_std)
        state[p + "mlp.c_proj.bias"] = randn(width, std=0.02)


def tiny_clip_state(seed: int = 0, **arch: int) -> dict[str, torch.Tensor]:
    """The random state dict (float16 tensors) of ``TINY_CLIP`` updated with ``arch``."""
    a = {**TINY_CLIP, **arch}
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * std).half()

    vw, tw, e = a["vision_width"], a["text_width"], a["embed_dim"]
    s: dict[str, torch.Tensor] = {}
    s["visual.conv1.weight"] = randn(
        vw, 3, a["patch"], a["patch"], std=(3 * a["patch"] ** 2) ** -0.5
    )
    s["visual.class_embedding"] = randn(vw, std=vw**-0.5)
    s["visual.positional_embedding"] = randn(a["grid"] ** 2 + 1, vw, std=vw**-0.5)
    for ln in ("ln_pre", "ln_post"):
        s[f"visual.{ln}.weight"] = 1 + randn(vw, std=0.1)
        s[f"visual.{ln}.bias"] = randn(vw, std=0.1)
    _blocks("visual.transformer", vw, a["vision_layers"], randn, s)
    s["visual.proj"] = randn(vw, e, std=vw**-0.5)
    s["token_embedding.weight"] = randn(a["vocab_size"], tw, std=0.02)
    s["positional_embedding"] = randn(a["context_length"], tw, std=0.01)
    _blocks("transformer", tw, a["text_layers"], randn, s)
    s["ln_final.weight"] = 1 + randn(tw, std=0.1)
    s["ln_final.bias"] = randn(tw, std=0.1)
    s["text_projection"] = randn(tw, e, std=tw**-0.5)
    s["logit_scale"] = torch.tensor(math.log(100.0)).half()
    return s


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors' bytes in key order (pins the generator's output)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    state = tiny_clip_state()
    torch.save(state, sys.argv[1])
    print(state_digest(state))
