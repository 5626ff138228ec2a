"""Settings of the CLIP base's CAMs (``pretrain.clip``) with CLIP-ES's values as defaults, and
the text prompts of a dataset's classes.

CLIP-ES (Lin et al., CVPR 2023, github.com/linyq2117/CLIP-ES, ``clip_text.py`` and
``generate_cams_*.py``): one template ``"a clean origami {}."``, background words that compete
with the present classes in the softmax, and class names rewritten into more telling prompts
("tvmonitor" → "tvmonitor screen"). VOC and COCO datasets get CLIP-ES's prompts; any other
source (a folder of the user's classes, the synthetic demo) uses its class names as they are.
``class_prompts`` overrides either, class by class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from smaf.errors import ConfigError

#: CLIP-ES's background words for VOC (``BACKGROUND_CATEGORY``).
BACKGROUND_VOC: tuple[str, ...] = (
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river",
    "sea", "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean",
    "road", "rock", "street", "valley", "bridge", "sign",
)  # fmt: skip
#: CLIP-ES's background words for COCO (``BACKGROUND_CATEGORY_COCO``: no keyboard, no sign).
BACKGROUND_COCO: tuple[str, ...] = tuple(w for w in BACKGROUND_VOC if w not in ("keyboard", "sign"))

#: CLIP-ES's prompts where they differ from the class name (``new_class_names``), keyed by this
#: project's VOC class names.
PROMPTS_VOC: dict[str, str] = {
    "bird": "bird avian",
    "chair": "chair seat",
    "person": "person with clothes,people,human",
    "tvmonitor": "tvmonitor screen",
}
#: CLIP-ES's COCO prompts (``new_class_names_coco``) keyed by the official COCO category names
#: (the ones the COCO source writes); "sknowboard" is CLIP-ES's spelling, kept for fidelity.
PROMPTS_COCO: dict[str, str] = {
    "person": "person with clothes,people,human",
    "motorcycle": "motorbike",
    "airplane": "aeroplane",
    "bird": "bird avian",
    "backpack": "backpack,bag",
    "umbrella": "umbrella,parasol",
    "handbag": "handbag,purse",
    "tie": "necktie",
    "snowboard": "sknowboard",
    "baseball glove": "glove",
    "spoon": "dessertspoon",
    "chair": "chair seat",
    "couch": "sofa",
    "potted plant": "pottedplant",
    "dining table": "diningtable",
    "tv": "tvmonitor screen",
    "remote": "remote control",
    "hair drier": "hairdrier,blowdrier",
}
_SOURCE_PROMPTS = {"voc": PROMPTS_VOC, "coco": PROMPTS_COCO}
_SOURCE_BACKGROUND = {"coco": BACKGROUND_COCO}


@dataclass
class ClipCAMConfig:
    """How CLIP CAMs are computed (``pretrain.clip`` keys); defaults are CLIP-ES's."""

    template: str = "a clean origami {}."  # prompt of every class and background word
    # Background words; None = CLIP-ES's list for the dataset (COCO's for COCO, else VOC's),
    # without words that are also a class's prompt.
    background: tuple[str, ...] | None = None
    # Prompt per class name, over the dataset's defaults (CLIP-ES's for VOC/COCO, else the name).
    class_prompts: dict[str, str] = field(default_factory=dict)
    scales: tuple[float, ...] = (1.0,)  # image scales (CLIP-ES: 1.0 only)
    flip: bool = False  # add horizontal flips (CLIP-ES: none); maps are averaged
    box_thr: float = 0.4  # CAM fraction of its max above which contours give boxes (CLIP-ES)
    attn_layers: int = 8  # last blocks whose mean attention is the affinity (CLIP-ES: 8)

    def __post_init__(self) -> None:
        if "{}" not in self.template:
            raise ValueError(f"template must contain '{{}}' for the class, got {self.template!r}")
        if self.background is not None:
            self.background = tuple(str(w) for w in self.background)
        self.class_prompts = {str(k): str(v) for k, v in dict(self.class_prompts or {}).items()}
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {self.scales}")
        if not 0.0 <= float(self.box_thr) < 1.0:
            raise ValueError(f"box_thr must be in [0, 1), got {self.box_thr}")
        if int(self.attn_layers) < 1:
            raise ValueError(f"attn_layers must be >= 1, got {self.attn_layers}")


def class_prompts(
    class_names: Sequence[str], source: str | None, overrides: Mapping[str, str] | None = None
) -> list[str]:
    """The prompt (the word put into the template) of each class, in class order.

    Args:
        class_names: the dataset's C class names, background excluded.
        source: the dataset's source (``voc``, ``coco``, ``folder``, ...): VOC and COCO get
            CLIP-ES's prompts, any other its class names.
        overrides: ``class_prompts`` of the settings, class name → prompt.

    Raises:
        ConfigError: an override names no class, or a class's prompt is empty.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(class_names))
    if unknown:
        raise ConfigError(
            f"pretrain.clip.class_prompts: no class named {', '.join(map(repr, unknown))}; "
            f"the classes are {', '.join(class_names)}."
        )
    table = _SOURCE_PROMPTS.get(str(source or ""), {})
    prompts = [overrides.get(n, table.get(n, n)) for n in class_names]
    empty = [n for n, p in zip(class_names, prompts, strict=True) if not str(p).strip()]
    if empty:
        raise ConfigError(
            f"class {empty[0]!r} has no CLIP prompt; give one in pretrain.clip.class_prompts "
            f"(e.g. {{{empty[0]!r}: 'a word CLIP knows'}})."
        )
    return prompts


def background_words(cfg: ClipCAMConfig, source: str | None, prompts: Sequence[str]) -> list[str]:
    """The background words: the configured ones, or CLIP-ES's for ``source`` minus any word
    that is also a class's prompt (a folder dataset may have a class "tree").

    Raises:
        ConfigError: no background word is left.
    """
    if cfg.background is not None:
        words = list(cfg.background)
    else:
        default = _SOURCE_BACKGROUND.get(str(source or ""), BACKGROUND_VOC)
        taken = {p.strip().lower() for p in prompts}
        words = [w for w in default if w not in taken]
    if not words or any(not w.strip() for w in words):
        raise ConfigError(
            "pretrain.clip.background needs at least one non-empty word (CLIP-ES's softmax "
            "runs over the present classes and the background words)."
        )
    return words
