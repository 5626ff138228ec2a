"""An OpenAI-format CLIP (ViT image tower + text transformer) built from a state dict's shapes.

Parameter names are those of OpenAI's released checkpoints (``visual.conv1.weight``,
``visual.transformer.resblocks.<i>.attn.in_proj_weight``, ``token_embedding.weight``, ...), so
``ViT-B-16.pt`` loads as it is, and so does a tiny random state dict written by a test. The
architecture is read from the shapes as OpenAI's ``build_model`` does: widths from
``visual.conv1.weight`` / ``ln_final.weight``, layer counts from the ``resblocks.<i>`` keys,
patch size from the stem, the pretraining grid from ``visual.positional_embedding``, heads =
width / 64. Only ViT image towers: CLIP-ES's CAMs need patch tokens.

The image tower returns patch tokens at any input size (a multiple of the patch size): the
positional embedding is interpolated bilinearly to the input's grid, as CLIP-ES does.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smaf.errors import SmafError

#: Keys every OpenAI-format ViT CLIP state dict has (the rest is checked by strict loading).
_REQUIRED = (
    "visual.conv1.weight",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.proj",
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "text_projection",
    "logit_scale",
)
#: Scalars OpenAI's TorchScript archives carry next to the parameters.
_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class ClipArch:
    """Architecture of a ViT CLIP, as read from its state dict."""

    embed_dim: int  # joint image-text embedding size
    vision_width: int
    vision_layers: int
    patch_size: int
    grid: int  # pretraining grid side (ViT-B/16: 224 / 16 = 14)
    context_length: int  # text tokens (77)
    vocab_size: int
    text_width: int
    text_layers: int

    @staticmethod
    def heads(width: int) -> int:
        """OpenAI's rule: one head per 64 channels (at least one, for tiny test models)."""
        return max(1, width // 64)


def _count_blocks(state: dict[str, Any], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def arch_from_state_dict(state: dict[str, Any], what: str = "the state dict") -> ClipArch:
    """Read the architecture from the shapes (OpenAI's ``build_model``).

    Raises:
        SmafError: ``state`` is not an OpenAI-format CLIP, or a ResNet one.
    """
    if "visual.proj" not in state and any(k.startswith("visual.layer1.") for k in state):
        raise SmafError(
            f"{what} is a ResNet CLIP; the CLIP base needs a ViT one (CLIP-ES uses ViT-B/16)."
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise SmafError(
            f"{what} is not an OpenAI-format CLIP checkpoint (no {', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); give a ViT CLIP such as ViT-B-16.pt."
        )
    conv = state["visual.conv1.weight"]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return ClipArch(
        embed_dim=int(state["text_projection"].shape[1]),
        vision_width=int(conv.shape[0]),
        vision_layers=_count_blocks(state, "visual.transformer.resblocks."),
        patch_size=int(conv.shape[-1]),
        grid=int(grid),
        context_length=int(state["positional_embedding"].shape[0]),
        vocab_size=int(state["token_embedding.weight"].shape[0]),
        text_width=int(state["ln_final.weight"].shape[0]),
        text_layers=_count_blocks(state, "transformer.resblocks."),
    )


class QuickGELU(nn.Module):
    """CLIP's activation: ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """Pre-norm residual attention block; tokens are ``[L, N, D]`` (sequence first)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(width, 4 * width),
                gelu=QuickGELU(),
                c_proj=nn.Linear(4 * width, width),
            )
        )

    def mix(self, x: torch.Tensor, y: torch.Tensor, attn_mask: torch.Tensor | None = None):
        """The block after its ``ln_1``: ``y = ln_1(x)`` given (Grad-CAM needs ``y``).

        Returns the block output ``[L, N, D]`` and the head-averaged attention ``[N, L, L]``
        (``None`` when ``attn_mask`` is given: the text tower does not need it).
        """
        need = attn_mask is None
        a, weights = self.attn(y, y, y, need_weights=need, attn_mask=attn_mask)
        x = x + a
        return x + self.mlp(self.ln_2(x)), weights

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None):
        return self.mix(x, self.ln_1(x), attn_mask)


class Blocks(nn.Module):
    """Holder giving the blocks OpenAI's parameter names (``transformer.resblocks.<i>``)."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(Block(width, ClipArch.heads(width)) for _ in range(layers))


class VisionTower(nn.Module):
    """ViT image tower; :meth:`tokens` gives the patch tokens before the last block."""

    def __init__(self, arch: ClipArch) -> None:
        super().__init__()
        w = arch.vision_width
        self.patch_size = arch.patch_size
        self.conv1 = nn.Conv2d(3, w, arch.patch_size, stride=arch.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(w))
        self.positional_embedding = nn.Parameter(torch.zeros(arch.grid**2 + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Blocks(w, arch.vision_layers)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.zeros(w, arch.embed_dim))

    def position(self, h: int, w: int) -> torch.Tensor:
        """Positional embedding ``[1 + h*w, D]`` for an ``h x w`` patch grid (bilinear)."""
        pos = self.positional_embedding
        grid = round((pos.shape[0] - 1) ** 0.5)
        patches = pos[1:].t().reshape(1, -1, grid, grid)  # [1, D, g, g]
        patches = F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)
        out = torch.cat([pos[:1], patches.reshape(pos.shape[1], h * w).t()], dim=0)
        # CLIP-ES keeps the interpolated table in half precision (its upsample_pos_emb).
        return out.half().to(pos.dtype)

    def tokens(
        self, image: torch.Tensor, keep_attn: int | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Tokens entering the last block and the attention of the blocks before it.

        Args:
            image: ``[N, 3, H, W]`` normalised, ``H`` and ``W`` multiples of the patch size.
            keep_attn: keep only the attention of the last this many of those blocks
                (``None``: all; each map is ``(1 + h*w)^2`` floats).

        Returns:
            ``[1 + h*w, N, D]`` tokens (class token first, ``h = H / patch``) and a list of
            ``[N, 1 + h*w, 1 + h*w]`` head-averaged attention maps of the blocks before the
            last (the last ``keep_attn`` of them), in block order.
        """
        x = self.conv1(image)  # [N, D, h, w]
        n, d, h, w = x.shape
        x = x.reshape(n, d, h * w).permute(0, 2, 1)  # [N, h*w, D]
        cls = self.class_embedding.to(x.dtype).expand(n, 1, d)
        x = torch.cat([cls, x], dim=1) + self.position(h, w).to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)  # [1 + h*w, N, D]
        attns: deque[torch.Tensor] = deque(maxlen=keep_attn)
        for block in self.transformer.resblocks[:-1]:
            x, a = block(x)
            attns.append(a)
        return x, list(attns)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Image embedding ``[N, E]`` from the last block's output ``[L, N, D]``: the mean of the
        patch tokens (not the class token) after ``ln_post``, projected (CLIP-ES)."""
        x = self.ln_post(x.permute(1, 0, 2))
        return x[:, 1:].mean(dim=1) @ self.proj


class Clip(nn.Module):
    """A ViT CLIP with OpenAI's parameter names."""

    def __init__(self, arch: ClipArch) -> None:
        super().__init__()
        self.arch = arch
        self.visual = VisionTower(arch)
        self.transformer = Blocks(arch.text_width, arch.text_layers)
        self.token_embedding = nn.Embedding(arch.vocab_size, arch.text_width)
        self.positional_embedding = nn.Parameter(torch.zeros(arch.context_length, arch.text_width))
        self.ln_final = nn.LayerNorm(arch.text_width)
        self.text_projection = nn.Parameter(torch.zeros(arch.text_width, arch.embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros(()))

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings ``[N, E]`` (not normalised) of token ids ``[N, context_length]``:
        the end-of-text token's output (the largest id of each row), projected."""
        x = self.token_embedding(tokens) + self.positional_embedding  # [N, T, D]
        x = x.permute(1, 0, 2)
        n = x.shape[0]
        mask = torch.full((n, n), float("-inf"), dtype=x.dtype, device=x.device).triu_(1)
        for block in self.transformer.resblocks:
            x, _ = block(x, attn_mask=mask)
        x = self.ln_final(x.permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Parameters of a CLIP checkpoint: a TorchScript archive (OpenAI's ``ViT-B-16.pt``) or a
    plain state dict saved with ``torch.save``.

    Raises:
        SmafError: the file is missing or neither of the two.
    """
    path = Path(path)
    if not path.is_file():
        raise SmafError(f"CLIP checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except (RuntimeError, ValueError):
        try:
            state = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # pickle/zip errors of any kind: not a checkpoint we can read
            raise SmafError(
                f"{path} is not a CLIP checkpoint (neither a TorchScript archive nor a state "
                f"dict: {type(exc).__name__}); give a ViT CLIP such as ViT-B-16.pt."
            ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SmafError(f"{path} is not a CLIP checkpoint (no state dict of tensors in it).")
    return dict(state)


def build_clip(state: dict[str, torch.Tensor], what: str = "the state dict") -> Clip:
    """A float32 :class:`Clip` in eval mode with the parameters of ``state``."""
    arch = arch_from_state_dict(state, what)
    model = Clip(arch)
    params = {k: v.float() for k, v in state.items() if k not in _EXTRA_KEYS}
    try:
        model.load_state_dict(params, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise SmafError(
            f"{what} is not an OpenAI-format ViT CLIP checkpoint ({first[0].strip()})."
        ) from None
    return model.eval().requires_grad_(False)


def load_clip(path: str | os.PathLike[str]) -> Clip:
    """Load an OpenAI-format ViT CLIP from a TorchScript archive or a state dict file.

    Raises:
        SmafError: naming ``path``: missing, not CLIP, or a ResNet CLIP.
    """
    return build_clip(read_state_dict(path), str(path))
