"""Segment Anything for pseudo labels: SAM's automatic masks per image, their compact storage,
and the SEPL rule that names them with the seeds' classes.

- :mod:`smaf.sam.model`: load official ``sam_vit_b/l/h`` or test-made checkpoints (the
  architecture is read from the state dict), the download items.
- :mod:`smaf.sam.masks`: :class:`SamSettings` (SAM's generator defaults), :func:`generate_masks`,
  :class:`SamMasks` (RLEs + scores), :func:`save_masks` / :func:`load_masks`.
- :mod:`smaf.sam.assign`: the SEPL assignment rule, :func:`sam_refine` for one image.

``segment-anything`` is optional (``pip install 'smaf[sam]'``) and imported on first use: this
package imports only numpy and smaf at load time.
"""

from smaf.sam.assign import (
    UNCLAIMED,
    SamRefineSettings,
    assign_masks,
    refine_with_masks,
    sam_refine,
)
from smaf.sam.masks import (
    SamMasks,
    SamSettings,
    estimate_peak_bytes,
    generate_masks,
    load_masks,
    save_masks,
)
from smaf.sam.model import (
    SAM_DOWNLOADS,
    SAM_INSTALL_HINT,
    SamArchitecture,
    build_sam,
    load_sam,
    require_segment_anything,
    sam_architecture,
)

__all__ = [
    "SAM_DOWNLOADS",
    "SAM_INSTALL_HINT",
    "UNCLAIMED",
    "SamArchitecture",
    "SamMasks",
    "SamRefineSettings",
    "SamSettings",
    "assign_masks",
    "build_sam",
    "estimate_peak_bytes",
    "generate_masks",
    "load_masks",
    "load_sam",
    "refine_with_masks",
    "require_segment_anything",
    "sam_architecture",
    "sam_refine",
    "save_masks",
]
