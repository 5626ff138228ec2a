"""The planner's refinements of the seeds (config ``refine:``, ``deeplab.pseudo_labels``): the
dense CRF, SAM masks named by the seeds (SEPL) and SAM then CRF; which splits each folder covers,
who computes it, and the one dataset-level SAM mask pass they share.

:class:`RefinementPlan` is a part of :class:`smaf.experiments.Experiments` (it uses its runs,
sections and owners); pure Python, unit-tested with it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from smaf.config import did_you_mean
from smaf.errors import ConfigError
from smaf.settings import CRFSettings

#: Refinements of the seeds: each is a folder ``<refinement>/<model>`` of a run and an
#: evaluation stage (``<model>_<refinement>_<split>_<gt>``).
REFINEMENTS = ("crf", "sam", "sam_crf")
#: The refinements that read SAM's masks.
SAM_REFINEMENTS = ("sam", "sam_crf")


class RefinementPlan:
    """Refinement planning of :class:`smaf.experiments.Experiments` (see the module)."""

    config: Any
    base: str

    def check_refinements(self) -> None:
        """An unknown ``refine:`` item: one ConfigError naming it (the schema's check, here
        for configs built in code)."""
        for kind in self.refinements():
            if kind not in REFINEMENTS:
                raise ConfigError(
                    f"refine: '{kind}'{did_you_mean(kind, REFINEMENTS)} is no refinement: "
                    f"use {', '.join(REFINEMENTS)}"
                )

    def refinements(self) -> list[str]:
        """The refinements of the seeds computed and scored (config ``refine:``, default crf)."""
        return list(self.config.get("refine") or ["crf"])

    def pseudo_labels(self, run: str) -> str:
        """Which refinement DeepLab of ``run`` trains on (``deeplab.pseudo_labels``)."""
        return self.section(run, "deeplab").get("pseudo_labels", "crf")  # type: ignore[attr-defined]

    def uses_sam(self) -> bool:
        """Whether any run scores or trains on a SAM refinement (then ``sam.checkpoint`` is
        needed and the ``sam:`` settings are part of the runs' config)."""
        listed = any(k in SAM_REFINEMENTS for k in self.refinements())
        runs = self.runs(False)  # type: ignore[attr-defined]
        return listed or any(self.pseudo_labels(r) in SAM_REFINEMENTS for r in runs)

    def stage_uses_sam(self, run: str, stage: str) -> bool:
        """Whether a record's ``stage`` (``smaf_sam``, ``deeplab_crf``...) used SAM's masks."""
        if stage.startswith("deeplab"):
            return self.pseudo_labels(run) in SAM_REFINEMENTS
        return stage.split("_", 1)[1] in SAM_REFINEMENTS

    def sam_crf_settings(self, run: str) -> CRFSettings:
        """The CRF of SAM-refined labels: the run's ``crf:`` with method labels (hard labels:
        there are no soft maps to refine)."""
        return replace(self.settings(run, "crf"), method="labels")  # type: ignore[attr-defined]

    def _refined_roles_of(self, dataset: str, run: str, model: str, kind: str) -> set[str]:
        """Splits whose refinement ``kind`` (:data:`REFINEMENTS`) run needs from ``model``:
        scored (when in ``refine:``), DeepLab's (its ``pseudo_labels``), figures' (CRF always:
        Fig. 5a shows it)."""
        roles = set()
        ev = self.section(run, "evaluation")  # type: ignore[attr-defined]
        listed = kind in self.refinements()
        if listed and self.has_masks(dataset) and model in ev["models"]:  # type: ignore[attr-defined]
            roles |= set(ev["splits"])
        deeplab = self.section(run, "deeplab")  # type: ignore[attr-defined]
        if (
            deeplab["labels_from"] == model
            and self.pseudo_labels(run) == kind
            and not deeplab.get("init_checkpoint")
        ):
            roles.add("train_aug")
        if (listed or kind == "crf") and run in self.runs() and model in ev["models"]:  # type: ignore[attr-defined]
            roles.add(self.figure_split(dataset, run))  # type: ignore[attr-defined]
        return roles

    def _sam_roles_of(self, dataset: str, run: str, model: str) -> set[str]:
        """Splits whose SAM-refined labels run needs from ``model`` (sam_crf refines them)."""
        return self._refined_roles_of(dataset, run, model, "sam") | self._refined_roles_of(
            dataset, run, model, "sam_crf"
        )

    def _users(self, owner: str, model: str, kind: str) -> list[str]:
        owner_of = self.refined_owner
        return [r for r in self.runs(False) if owner_of(r, model, kind) == owner]  # type: ignore[attr-defined]

    def sam_roles(self, dataset: str, owner: str, model: str) -> list[str]:
        """Every split the SAM-refined folder of ``owner`` must cover (shared like the seeds:
        the ``sam:`` settings are the same for every run)."""
        users = self._users(owner, model, "sam")
        return sorted(set().union(*(self._sam_roles_of(dataset, r, model) for r in users)))

    def sam_crf_roles(self, dataset: str, owner: str, model: str) -> list[str]:
        """Every split the SAM-then-CRF folder of ``owner`` must cover (shared like CRF's)."""
        users = self._users(owner, model, "sam_crf")
        roles = (self._refined_roles_of(dataset, r, model, "sam_crf") for r in users)
        return sorted(set().union(*roles))

    def sam_mask_roles(self, dataset: str) -> list[str]:
        """Every split whose SAM masks any run's SAM refinement needs: one dataset-level folder
        (the masks depend on the image alone), empty when no run uses SAM."""
        runs = list(self.runs(False))  # type: ignore[attr-defined]
        roles = (self._sam_roles_of(dataset, r, m) for r in runs for m in (self.base, "smaf"))
        return sorted(set().union(*roles))

    def refined_owner(self, run: str, model: str, kind: str) -> str:
        """The run whose ``<kind>/<model>`` folder holds run's refined labels (the base's:
        shared): SAM's like the seeds (the ``sam:`` settings are global), CRF's and SAM+CRF's
        like the CRF."""
        if kind == "sam":
            return self.seeds_owner(run, model)  # type: ignore[attr-defined]
        return self.crf_owner(run, model)  # type: ignore[attr-defined]
