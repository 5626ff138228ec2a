"""The CLIP base: training-free CAMs of an OpenAI-format CLIP ViT (CLIP-ES, CVPR 2023).

:mod:`.model` builds the network from a checkpoint's shapes, :mod:`.tokenizer` wraps
open-clip-torch's BPE tokenizer (the ``smaf[clip]`` extra), :mod:`.settings` holds CLIP-ES's
prompts and defaults, :mod:`.cams` computes the CAMs and their affinity refinement.
"""

from smaf.clip.cams import ImageCAMs, image_cams, text_features
from smaf.clip.model import Clip, ClipArch, arch_from_state_dict, build_clip, load_clip
from smaf.clip.settings import ClipCAMConfig, background_words, class_prompts

__all__ = [
    "Clip",
    "ClipArch",
    "ClipCAMConfig",
    "ImageCAMs",
    "arch_from_state_dict",
    "background_words",
    "build_clip",
    "class_prompts",
    "image_cams",
    "load_clip",
    "text_features",
]
