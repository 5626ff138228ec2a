"""What ``smaf predict`` writes: masks, overlays, CAM heat maps, classes.json, areas.csv.

:class:`OutputFolder` owns one output folder (layout in :mod:`smaf.predict`): it refuses a
folder made with other settings, writes an image's files atomically with its mask last (a
mask means the image is done, with the photo's identity in the journal: a mask of a photo
replaced since is redone, never served stale; :class:`smaf.perimage.Journal`), and writes the
tables at the end. It lists every file it
writes (:mod:`smaf.predict.ownership`) and never deletes or writes over any other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smaf.data.images import ImageFile
from smaf.errors import SmafError
from smaf.io import atomic_write, load_mask, save_image, save_mask, voc_palette
from smaf.perimage import Journal, text_identity
from smaf.predict.ownership import LEDGER, check_output_folder, claim, owned_files, remove_files
from smaf.staging import JOURNAL, file_identity, open_staging, publish

#: The settings record of an output folder and the list of the files written there.
MANIFEST = "predict.json"


def classes_document(class_names: Sequence[str]) -> dict[str, Any]:
    """``classes.json``: each label value's name and RGB colour (the VOC palette)."""
    pal = voc_palette()
    return {
        "classes": [
            {"value": v, "name": n, "color": pal[3 * v : 3 * v + 3]}
            for v, n in enumerate(class_names)
        ],
        "palette": "PASCAL VOC",
    }


def overlay_image(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` with each foreground pixel blended with its class colour: uint8 ``[H, W, 3]``.

    ``out = (1 - alpha) * image + alpha * colour`` where ``mask > 0``; background unchanged.
    """
    pal = np.asarray(voc_palette(), dtype=np.float32).reshape(256, 3)
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * pal[mask]  # [H, W, 3]
    return np.where((mask > 0)[:, :, None], np.rint(blend), image).astype(np.uint8)


def heat_map(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * jet(cam)``: uint8 ``[H, W, 3]``; ``cam`` ``[H, W]`` in [0, 1]."""
    from matplotlib import colormaps  # here: only CAMs need it

    jet = colormaps["jet"](np.clip(cam, 0.0, 1.0))[:, :, :3] * 255.0  # [H, W, 3]
    return np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * jet).astype(np.uint8)


def class_fractions(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the pixels of each label 0..C: float64 ``[C+1]`` summing to 1."""
    counts = np.bincount(mask.ravel(), minlength=num_classes + 1)[: num_classes + 1]
    return counts / max(mask.size, 1)


def safe_tag(name: str) -> str:
    """A class name usable inside a file name (path separators and NUL replaced)."""
    return re.sub(r"[/\\\x00]", "_", name)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class OutputFolder:
    """The output folder of one ``smaf predict`` run; open it with :meth:`open`.

    Attributes:
        root: where the files are written (the output folder, or its staging folder).
        areas: per image (relative path) its ``areas.csv`` row, for the images done so far.
    """

    def __init__(
        self, root: Path, settings: dict[str, Any], class_names: Sequence[str], alpha: float
    ) -> None:
        self.root = root
        self.settings = settings
        self.names = list(class_names)
        self.alpha = alpha
        self.areas: dict[str, dict[str, Any]] = {}
        self.files: set[str] = set()  # relative paths of the files written here (and kept)
        self.journal = Journal(root)

    @classmethod
    def open(
        cls,
        out: str | os.PathLike[str],
        settings: dict[str, Any],
        class_names: Sequence[str],
        *,
        alpha: float = 0.5,
        overwrite: bool = False,
        work_dir: str | os.PathLike[str] | None = None,
    ) -> OutputFolder:
        """Open ``out`` (created if needed) for a run with ``settings``.

        Without ``work_dir`` the files go into ``out`` itself, which must be empty, new or
        hold only files an earlier run listed (:mod:`smaf.predict.ownership`) made with the
        same settings (``overwrite``: those listed files are removed first). With ``work_dir`` they go into that staging folder, resumed when its settings
        match (:func:`smaf.staging.open_staging`), published by :meth:`close`.

        Raises:
            SmafError: ``out`` holds files smaf did not write, or predictions made with other
                settings.
        """
        out = Path(out)
        if work_dir is not None:
            if overwrite and Path(work_dir).exists():
                shutil.rmtree(work_dir)
            root = open_staging(out, work_dir, settings)
            owned = {r for r in owned_files(root, MANIFEST) if (root / r).is_file()}
        else:
            root = out
            owned = check_output_folder(out, MANIFEST)
            old = cls._old_settings(out)
            if old is not None and old != settings and not overwrite:
                differ = sorted(
                    k for k in settings if not isinstance(old, dict) or old.get(k) != settings[k]
                )
                raise SmafError(
                    f"{out} holds predictions made with other settings ({', '.join(differ)} "
                    "differ); choose another output folder or add --overwrite to redo every image."
                )
            if overwrite:
                remove_files(out, owned)
                (out / JOURNAL).unlink(missing_ok=True)
                owned = set()
            out.mkdir(parents=True, exist_ok=True)
        folder = cls(root, settings, class_names, alpha)
        folder.files = owned - {LEDGER}
        folder.claim(root / MANIFEST, root / "classes.json", root / "areas.csv")
        if work_dir is None:  # a staging folder's journal is not published
            folder.claim(root / JOURNAL)
        manifest = {"settings": settings, "finished": False, "files": sorted(folder.files)}
        _write_json(root / MANIFEST, manifest)
        _write_json(root / "classes.json", classes_document(class_names))
        return folder

    def claim(self, *paths: Path) -> None:
        """Record files under :attr:`root` as this tool's before writing them."""
        rels = [p.relative_to(self.root).as_posix() for p in paths]
        claim(self.root, [r for r in rels if r not in self.files])
        self.files.update(rels)

    @staticmethod
    def _old_settings(out: Path) -> Any:
        """The settings an earlier run recorded in ``out``; None if it made none there."""
        manifest = out / MANIFEST
        if manifest.is_file():
            try:
                return json.loads(manifest.read_text(encoding="utf-8")).get("settings")
            except (ValueError, AttributeError):
                return "unreadable"
        return None

    # -------------------------------------------------------------------------- per image
    def mask_path(self, f: ImageFile) -> Path:
        return self.root / "masks" / f.output(".png")

    def overlay_path(self, f: ImageFile) -> Path:
        return self.root / "overlay" / f.output(".jpg")

    def cam_path(self, f: ImageFile, label: int) -> Path:
        return self.root / "cams" / f.output(".png", f"_{safe_tag(self.names[label])}")

    @staticmethod
    def identity(f: ImageFile) -> str:
        """What identifies photo ``f`` now: its size and modification time."""
        st = file_identity(f.path)
        return text_identity({"size": st["size"], "mtime_ns": st["mtime_ns"]})

    def is_done(self, f: ImageFile) -> bool:
        """Whether an earlier run finished image ``f`` as it is now (its mask, written last,
        exists and the journal records the photo's current identity)."""
        return self.mask_path(f).is_file() and self.journal.finished(str(f.rel), self.identity(f))

    def write(
        self,
        f: ImageFile,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        overlay: bool,
        cams: Mapping[int, np.ndarray] | None = None,
    ) -> None:
        """Write image ``f``'s files: heat maps of ``cams`` (label → ``[H, W]`` in [0, 1]), the
        overlay, then the mask ``[H, W]`` (0..C)."""
        self.claim(
            *(self.cam_path(f, label) for label in cams or {}),
            *([self.overlay_path(f)] if overlay else []),
            self.mask_path(f),
        )
        for label, cam in (cams or {}).items():
            save_image(self.cam_path(f, label), heat_map(image, cam, self.alpha))
        if overlay:
            save_image(self.overlay_path(f), overlay_image(image, mask, self.alpha))
        save_mask(self.mask_path(f), mask)  # last: a mask means the image is done
        self.journal.record(str(f.rel), self.identity(f))
        self.record(f, mask)

    def reuse(self, f: ImageFile, overlay: bool, read: Callable[[Path], np.ndarray]) -> None:
        """Take image ``f`` from an earlier run: its areas from the mask, and the overlay
        (``read`` gives the image) when it is asked for now and missing."""
        mask = load_mask(self.mask_path(f))
        if overlay and not self.overlay_path(f).is_file():
            self.claim(self.overlay_path(f))
            save_image(self.overlay_path(f), overlay_image(read(f.path), mask, self.alpha))
        self.record(f, mask)

    def record(self, f: ImageFile, mask: np.ndarray) -> None:
        """Remember image ``f``'s ``areas.csv`` row."""
        row: dict[str, Any] = {"image": str(f.rel), "width": mask.shape[1], "height": mask.shape[0]}
        fractions = class_fractions(mask, len(self.names) - 1)
        row.update(zip(self.names, fractions.tolist(), strict=True))
        self.areas[str(f.rel)] = row

    # ----------------------------------------------------------------------------- the end
    def close(
        self,
        files: Sequence[ImageFile],
        summary: Mapping[str, Any],
        out: str | os.PathLike[str],
        skipped: Sequence[str] = (),
    ) -> None:
        """Write ``areas.csv`` (rows in ``files`` order) and the finished manifest, then
        publish a staging folder onto ``out``."""
        import pandas as pd  # here: the loop does not need it

        rows = [self.areas[str(f.rel)] for f in files if str(f.rel) in self.areas]
        with atomic_write(self.root / "areas.csv") as tmp:
            table = pd.DataFrame(rows, columns=["image", "width", "height", *self.names])
            table.to_csv(tmp, index=False, lineterminator="\n")
        record = {"settings": self.settings, "finished": True, **summary}
        record["files"] = sorted(self.files)
        _write_json(self.root / MANIFEST, {**record, "skipped_images": list(skipped)})
        (self.root / LEDGER).unlink(missing_ok=True)  # the manifest lists its files now
        self.journal.close()
        publish(self.root, out)
