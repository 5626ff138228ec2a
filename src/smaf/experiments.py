"""Experiments, runs and ablations: what the workflow builds, computed from the config alone.

The config's ``experiments:`` map a name to overrides of any section; ``train.seeds`` runs each
experiment once per seed (the first seed in ``<name>/``, the others in ``<name>_seed<k>/``);
``ablations:`` rows name an experiment, defined by their ``overrides`` or reused from
``experiments:``. :class:`Experiments` answers every question the rules ask about them (run
names, the merged section of a run, which run owns an offline teacher pass, the ablation
rows) and builds each run's typed stage settings once (:meth:`Experiments.settings`, the
rules' params). Pure Python (no torch): unit-tested without Snakemake; ``common.smk`` wraps it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from smaf.config import (
    Settings,
    canonical,
    deep_merge,
    did_you_mean,
    is_auto,
    result_train_keys,
    settings_dict,
)
from smaf.errors import ConfigError
from smaf.provenance import provenance
from smaf.refinements import RefinementPlan
from smaf.settings import PREVIEW_THR, SECTIONS, TRAINING, SeedsSettings

#: Run name of an experiment's extra seeds: ``<name>_seed<k>``.
REPLICATE = re.compile(r"^(?P<name>.+)_seed(?P<seed>[0-9]+)$")
#: Top-level sections an experiment may override (the others are shared by every run).
OVERRIDABLE = ("self_train", "seeds", "crf", "evaluation", "deeplab")
#: What an ablation row reports: the SMAF model's seeds and their CRF, on the train split.
ABLATION_STAGES = ("seed", "crf")
#: What is evaluated of each classifier by default: its CAM seeds and their CRF refinement.
SEED_STAGES = ("seed", "crf")
#: How DeepLab's val predictions are scored: MSC alone and MSC + CRF (stages in summary.csv).
DEEPLAB_STAGES = ("deeplab", "deeplab_crf")
#: Top-level sections whose values change a run's numbers (besides its dataset and `train:`).
RESULT_SECTIONS = ("saliency", "model", "pretrain", *OVERRIDABLE)
#: Dataset sources with no test images to predict: COCO 2014's test2014 has no annotations
#: and no evaluation server for semantic segmentation (smaf.data.sources.coco builds no test
#: index), so `rule all` asks for no submission archive there.
NO_TEST_IMAGES = ("coco",)
#: The model name of each ``pretrain.method``'s base (its seeds, CRF and evaluation records):
#: EPS and its CAM baseline train the classifier ``eps``; the CLIP base is ``clip`` (no
#: classifier: CLIP-ES CAMs of the ``pretrain.clip`` weights).
BASE_MODELS = {"eps": "eps", "cam": "eps", "clip": "clip"}
#: The ``pretrain.clip`` keys that are no CAM settings (smaf.clip.ClipCAMConfig's are the rest).
CLIP_WORKFLOW_KEYS = ("weights",)


def eps_is_trained(config: Mapping[str, Any]) -> bool:
    """Whether EPS pretraining runs, and so needs a saliency map per training image (not with
    pretrain.method cam, nor when pretrain.init_checkpoint replaces the training)."""
    pretrain = config.get("pretrain") or {}
    return pretrain.get("method", "eps") == "eps" and not pretrain.get("init_checkpoint")


def base_model(config: Mapping[str, Any]) -> str:
    """The base's model name (``eps`` or ``clip``) under ``pretrain.method`` (:data:`BASE_MODELS`)."""
    return BASE_MODELS[(config.get("pretrain") or {}).get("method", "eps")]


def canonical_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every dict key-sorted (Snakemake compares params by their text, so the same
    settings in another key order must rerun nothing); experiments and ablation tables keep the
    order they are written in (the first experiment is the report's)."""
    out = {k: canonical(v) for k, v in config.items() if k not in ("experiments", "ablations")}
    out["experiments"] = {n: canonical(o or {}) for n, o in config["experiments"].items()}
    out["ablations"] = {t: canonical(rows) for t, rows in (config.get("ablations") or {}).items()}
    return out


class Experiments(RefinementPlan):
    """The experiments, runs and ablation rows of one (validated, canonical) config."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        #: Random seeds; pretraining (shared by every run) uses the first.
        self.seeds = [int(s) for s in config["train"]["seeds"]]
        #: The base model's name (eps | clip): its seeds and CRF are shared by every run.
        self.base = base_model(config)
        self.listed = dict(config["experiments"])  # built by `rule all`
        self.ablations = dict(config.get("ablations") or {})
        self.all = {**self.listed, **self._ablation_experiments()}
        for name, overrides in self.all.items():
            if REPLICATE.match(name):
                raise ConfigError(
                    f"experiment name '{name}' ends in _seed<k>, which names the extra runs of "
                    "an experiment (train.seeds). Rename it."
                )
            for section in sorted(set(overrides or {}) - set(OVERRIDABLE)):
                raise ConfigError(
                    f"experiment '{name}' overrides '{section}'{did_you_mean(section, OVERRIDABLE)}"
                    f": experiments can override {', '.join(OVERRIDABLE)} only (the dataset, "
                    "the model and pretraining are shared by every run)."
                )
        self.check_refinements()
        for table, rows in self.ablations.items():
            for row in rows:
                if row["experiment"] not in self.all:
                    raise ConfigError(
                        f"ablations.{table}: row '{row['row']}' names experiment "
                        f"'{row['experiment']}', which is neither under `experiments:` nor "
                        "given `overrides`. Add one of them."
                    )

    def _ablation_experiments(self) -> dict[str, dict[str, Any]]:
        """Experiments declared by ``ablations:`` rows with overrides: name → overrides."""
        found: dict[str, dict[str, Any]] = {}
        for table, rows in self.ablations.items():
            for row in rows:
                name = row["experiment"]
                if "overrides" not in row:
                    continue
                if name in self.listed or (name in found and found[name] != row["overrides"]):
                    raise ConfigError(
                        f"ablations.{table}: experiment '{name}' is defined twice with different "
                        "overrides (rename it, or drop `overrides` to reuse the existing one)."
                    )
                found[name] = row["overrides"] or {}
        return found

    # ------------------------------------------------------------------------------ runs
    def run_names(self, name: str) -> list[str]:
        """Runs of experiment ``name``: ``name`` for the first seed, ``name_seed<k>`` after."""
        return [name if s == self.seeds[0] else f"{name}_seed{s}" for s in self.seeds]

    def parse_run(self, run: str) -> tuple[str, int]:
        """(experiment name, random seed) of a run name (see :meth:`run_names`)."""
        m = REPLICATE.match(run)
        if m and m["name"] in self.all:
            return m["name"], int(m["seed"])
        return run, self.seeds[0]

    def runs(self, listed_only: bool = True) -> Iterator[str]:
        """Every run of the listed experiments (or of all, ablations' included)."""
        for name in self.listed if listed_only else self.all:
            yield from self.run_names(name)

    def section(self, run: str, section: str) -> dict[str, Any]:
        """Config section ``section`` with the overrides of run ``run``'s experiment applied."""
        name, _ = self.parse_run(run)
        return deep_merge(self.config.get(section) or {}, (self.all[name] or {}).get(section, {}))

    def merged_config(self, name: str) -> dict[str, Any]:
        """The whole config as experiment ``name`` sees it (for validating overrides)."""
        return deep_merge(
            {k: v for k, v in self.config.items() if k not in ("experiments", "ablations")},
            self.all[name] or {},
        )

    def run_config(self, run: str, dataset: str) -> dict[str, Any]:
        """The config a run of ``dataset`` was made with (a summary row's ``config``): the
        dataset's entry, the result-changing ``train:`` keys with the run's seed, and the
        :data:`RESULT_SECTIONS` as the run's experiment sees them (how a job runs, where
        files come from and sharding are left out: they change no number)."""
        name, seed = self.parse_run(run)
        cfg = self.merged_config(name)
        train = {k: cfg["train"][k] for k in result_train_keys(cfg["train"])}
        if self.base != "clip":  # the CLIP settings change no number of an EPS base
            cfg["pretrain"] = {k: v for k, v in cfg["pretrain"].items() if k != "clip"}
        sam = {}
        if self.uses_sam():  # SAM's settings and checkpoint, only where SAM made numbers
            sam = {"refine": self.refinements(), "sam": self.settings(run, "sam").to_dict()}
        elif cfg.get("deeplab", {}).get("pseudo_labels") == "crf":  # as before the key was
            cfg["deeplab"] = {k: v for k, v in cfg["deeplab"].items() if k != "pseudo_labels"}
        return canonical(
            {
                "dataset": dataset,
                "datasets": {dataset: self.config["datasets"][dataset]},
                "train": {**train, "seed": seed},
                **{k: cfg[k] for k in RESULT_SECTIONS if k in cfg},
                **sam,
            }
        )

    def provenance(self, run: str, model: str, stage: str) -> dict[str, str]:
        """``base`` and ``supervision`` of a record of run ``run`` (classifier or DeepLab
        labels ``model``, ``stage``): :func:`smaf.provenance.provenance` of its merged config."""
        cfg = self.merged_config(self.parse_run(run)[0])
        return provenance(cfg, model, stage, sam=self.stage_uses_sam(run, stage))._asdict()

    def settings(self, run: str | None, section: str) -> Settings:
        """The typed settings (:mod:`smaf.settings`) of config section ``section`` for run
        ``run`` (``None``: pretraining, shared by every run: the base config, first seed).

        The one builder: the run's merged section, and for a training stage the result-changing
        ``train:`` keys (``amp``) and the run's random seed. A rule passes their
        :meth:`~smaf.config.Settings.params` (runtime keys are none: changing them reruns
        nothing); its script rebuilds them with ``from_dict``.
        """
        if run is None:
            seed, values = self.seeds[0], dict(self.config.get(section) or {})
        else:
            seed, values = self.parse_run(run)[1], self.section(run, section)
        if section in TRAINING:
            train = self.config["train"]
            values.update({k: train[k] for k in result_train_keys(train)}, seed=seed)
        return SECTIONS[section].from_dict(values, section)

    # --------------------------------------------------------------------------- targets
    def has_aug_masks(self, dataset: str) -> bool:
        """Whether ``dataset`` has SegmentationClassAug masks (downloaded, converted, present)."""
        ds = self.config["datasets"][dataset]
        if ds["source"] != "voc":
            return False  # the synthetic generator writes SegmentationClass only
        if ds.get("aug_source", "none") != "none":
            return True  # the workflow downloads / converts them
        if ds.get("aug_mask_dir"):
            return Path(ds["aug_mask_dir"]).is_dir()
        return Path(ds["root"], "SegmentationClassAug").is_dir()

    def has_masks(self, dataset: str) -> bool:
        """Whether ``dataset`` has ground-truth masks to score (a folder source: if given)."""
        ds = self.config["datasets"][dataset]
        return ds["source"] != "folder" or bool(ds.get("masks"))

    def _gts(self, dataset: str, run: str) -> list[str]:
        if not self.has_masks(dataset):
            return []  # nothing to score against: no mIoU rows rather than made-up ones
        gts = self.section(run, "evaluation")["gt"]
        return [g for g in gts if g != "SegmentationClassAug" or self.has_aug_masks(dataset)]

    def seed_records(self, dataset: str, run: str) -> list[str]:
        """Evaluation records of a run's seeds and CRF: models x stages x splits x gts."""
        ev = self.section(run, "evaluation")
        return [
            f"results/{dataset}/{run}/eval/{model}_{stage}_{split}_{gt}.json"
            for model, stage, split, gt in itertools.product(
                ev["models"], ("seed", *self.refinements()), ev["splits"], self._gts(dataset, run)
            )
        ]

    def deeplab_records(self, dataset: str, run: str) -> list[str]:
        """DeepLab's val records of a run: MSC and MSC + CRF x the available gts."""
        return [
            f"results/{dataset}/{run}/eval/{stage}_val_{gt}.json"
            for stage, gt in itertools.product(DEEPLAB_STAGES, self._gts(dataset, run))
        ]

    def summary_records(self, dataset: str) -> list[str]:
        """Every evaluation record of ``results/summary.csv``: listed experiments x seeds."""
        return [
            f
            for run in self.runs()
            for f in [*self.seed_records(dataset, run), *self.deeplab_records(dataset, run)]
        ]

    def submission_archives(self, dataset: str) -> list[str]:
        """Test archives of the experiments whose deeplab.test.submission is true (first seed);
        a user's own dataset gets its test predictions instead (the VOC server's archive
        layout means nothing there); a source without test images (:data:`NO_TEST_IMAGES`)
        gets neither, whatever the key says."""
        source = self.config["datasets"][dataset]["source"]
        if source in NO_TEST_IMAGES:
            return []
        if source == "folder":
            return [
                f"results/{dataset}/{self.run_names(name)[0]}/deeplab/pred_test_crf"
                for name in self.listed
            ]
        return [
            f"results/{dataset}/{self.run_names(name)[0]}/deeplab_submission.tar.gz"
            for name in self.listed
            if self.section(name, "deeplab")["test"]["submission"]
        ]

    # ---------------------------------------------- who computes what: no image twice
    # The base (EPS model, or CLIP) is shared by every run, so its seeds (and their CRF) depend
    # only on the seeds (and CRF) settings: the first experiment with those settings computes them
    # for all. The offline teacher's maps *are* the base's seeds when the teacher's pass has the
    # seeds' settings (the teacher's CAM settings equal the seeds' and the seeds' threshold is the
    # previews', PREVIEW_THR): then one pass serves both. A pass covers every split any of its
    # users needs (train ⊂ train_aug on VOC: each image once). The CLIP base's seeds use the
    # ``pretrain.clip`` scales and flip, its teacher ``self_train.teacher_cam``'s (their
    # resize_mode and eps apply to classifier teachers only).
    def teacher_settings(self, run: str) -> SeedsSettings:
        """The offline teacher's pass of ``run`` (a classifier teacher): the seeds computation
        with the teacher's CAM (``self_train.teacher_cam``), the previews' background score
        (:data:`PREVIEW_THR`: its maps do not depend on it) and ``seeds.amp`` (the rule
        teacher_maps' settings)."""
        cam = self.settings(run, "self_train").teacher_cam
        return replace(self.settings(run, "seeds"), cam=cam, thr=PREVIEW_THR)

    def clip_settings(self, run: str, which: str = "seeds") -> dict[str, Any]:
        """The CLIP base's CAM settings (``pretrain.clip`` less its weights: the fields of
        smaf.clip.ClipCAMConfig) of the seeds pass, or (``which='teacher'``) of run's offline
        teacher pass: scales and flip from ``self_train.teacher_cam``."""
        clip = self.settings(None, "pretrain").clip
        cfg = {k: v for k, v in clip.items() if k not in CLIP_WORKFLOW_KEYS}
        cfg["class_prompts"] = cfg.get("class_prompts") or {}
        if which == "teacher":
            cam = self.settings(run, "self_train").teacher_cam
            cfg["scales"], cfg["flip"] = list(cam.scales), cam.flip
        cfg["scales"] = [float(v) for v in cfg.get("scales", [1.0])]
        return canonical(cfg)

    def _base_pass(self, run: str, which: str) -> Any:
        """What the base's seeds (``which='seeds'``) or offline teacher (``'teacher'``) pass of
        run computes with: equal values, one pass. A classifier's: its SeedsSettings; CLIP's:
        its CAM settings and background score (CLIP has no bf16 pass: ``seeds.amp`` is moot)."""
        if self.base == "clip":
            thr = PREVIEW_THR if which == "teacher" else self.settings(run, "seeds").thr
            return repr(self.clip_settings(run, which)), thr
        return self.teacher_settings(run) if which == "teacher" else self.settings(run, "seeds")

    def teacher_owner(self, run: str) -> str:
        """Experiment whose offline teacher maps a run uses: the first with the same settings.

        The maps depend only on the base and the pass's settings (:meth:`teacher_settings`:
        ``self_train.teacher_cam``, ``seeds.amp``; CLIP's: :meth:`clip_settings`), so the extra
        seeds of an experiment, and experiments that change other settings, share one pass.
        """
        teacher = self._base_pass(run, "teacher")
        return next(n for n in self.all if self._base_pass(n, "teacher") == teacher)

    def _seeds_key(self, run: str, model: str) -> tuple:
        if model == self.base:
            return model, repr(self._base_pass(run, "seeds"))
        return model, repr(self.settings(run, "seeds")), run

    def teacher_is_base_seeds(self, run: str) -> bool:
        """Whether run's offline teacher maps are its base's seeds pass (same settings)."""
        return self._base_pass(run, "teacher") == self._base_pass(run, "seeds")

    #: The EPS name of :meth:`teacher_is_base_seeds`.
    teacher_is_eps_seeds = teacher_is_base_seeds

    def seeds_owner(self, run: str, model: str) -> str:
        """The run whose ``seeds/<model>`` folder holds run's seeds (the base's: shared)."""
        if model != self.base:
            return run
        key = self._seeds_key(run, model)
        return next(r for r in self.runs(False) if self._seeds_key(r, model) == key)

    def crf_owner(self, run: str, model: str) -> str:
        """The run whose ``crf/<model>`` folder holds run's CRF labels (the base's: shared)."""
        if model != self.base:
            return run
        key = (self._seeds_key(run, model), self.settings(run, "crf").params())
        return next(
            r
            for r in self.runs(False)
            if (self._seeds_key(r, model), self.settings(r, "crf").params()) == key
        )

    def teacher_folder(self, dataset: str, run: str) -> str:
        """The folder of run's offline teacher maps (``maps/<id>.npz`` inside)."""
        if self.teacher_is_base_seeds(run):
            return f"results/{dataset}/{self.seeds_owner(run, self.base)}/seeds/{self.base}"
        return f"results/{dataset}/{self.teacher_owner(run)}/teacher_maps"

    def figure_split(self, dataset: str, run: str) -> str:
        """The split the report's figures show: train when evaluated, else train_aug."""
        if not self.has_masks(dataset):
            return "train_aug"
        splits = self.section(run, "evaluation")["splits"]
        return "train" if "train" in splits else splits[0]

    def _crf_roles_of(self, dataset: str, run: str, model: str) -> set[str]:
        """Splits whose CRF labels run needs from ``model``: scored, DeepLab's, figures'."""
        return self._refined_roles_of(dataset, run, model, "crf")

    def _seeds_roles_of(self, dataset: str, run: str, model: str) -> set[str]:
        """Splits whose seeds run needs from ``model``: its CRF's, the merged teacher's, the
        threshold sweep's."""
        roles = self._crf_roles_of(dataset, run, model) | self._sam_roles_of(dataset, run, model)
        if run in self.runs():  # Fig. 3 shows both classifiers' fused maps
            roles.add(self.figure_split(dataset, run))
        self_train = self.section(run, "self_train")
        offline = self_train["teacher"] == "offline"
        if model == self.base and offline and self.teacher_is_base_seeds(run):
            roles.add("train_aug")
        if model in (self.config.get("thr_sweep") or {}).get("models", ()):
            roles.add("train_aug")
        return roles

    def seeds_roles(self, dataset: str, owner: str, model: str) -> list[str]:
        """Every split the seeds folder of ``owner`` must cover (for all the runs it serves)."""
        users = [r for r in self.runs(False) if self.seeds_owner(r, model) == owner]
        return sorted(set().union(*(self._seeds_roles_of(dataset, r, model) for r in users)))

    def crf_roles(self, dataset: str, owner: str, model: str) -> list[str]:
        """Every split the CRF folder of ``owner`` must cover (for all the runs it serves)."""
        users = [r for r in self.runs(False) if self.crf_owner(r, model) == owner]
        return sorted(set().union(*(self._crf_roles_of(dataset, r, model) for r in users)))

    # ------------------------------------------------------- thr: auto (held-out sweep)
    def has_heldout_masks(self, dataset: str) -> bool:
        """Whether ``dataset`` has ground truth for train_aug images outside every evaluation
        split (VOC: SegmentationClassAug; a folder dataset: its masks)."""
        source = self.config["datasets"][dataset]["source"]
        if source == "voc":
            return self.has_aug_masks(dataset)
        return self.has_masks(dataset)

    def check_thr_auto(self, dataset: str) -> None:
        """``thr: auto`` needs held-out masks: one ConfigError naming the key, before any job."""
        if self.has_heldout_masks(dataset):
            return
        for name in self.all:
            for section in ("seeds", "self_train"):
                if is_auto(self.section(name, section)["thr"]):
                    raise ConfigError(
                        f"experiment '{name}': {section}.thr: auto tunes the threshold on "
                        f"train_aug images outside every evaluation split, but dataset "
                        f"'{dataset}' has no ground truth for them (VOC: SegmentationClassAug "
                        "via aug_source / aug_mask_dir; a folder dataset: `masks`). Set a "
                        f"number for {section}.thr or add those masks."
                    )

    def thr_auto_record(self, dataset: str, run: str, target: str) -> str:
        """The ``thr: auto`` choice a run uses: ``target`` eps / smaf = its seeds of that
        model (EPS: the seeds folder's owner), ``teacher`` = its reactivation threshold."""
        owner = self.seeds_owner(run, target) if target in ("eps", "smaf") else run
        return f"results/{dataset}/{owner}/thr_auto/{target}.json"

    def thr_auto_source(self, dataset: str, run: str, target: str) -> dict[str, Any]:
        """Where the ``thr: auto`` sweep of ``target`` reads its maps: ``maps_dir`` (the
        offline teacher's folder: made without the choice) or ``model_path`` + ``cam`` + ``amp``
        (computed: a seeds folder of ``thr: auto`` is made with the choice, so it waits)."""
        eps_model = f"results/{dataset}/pretrain/model.pt"
        if target == "teacher":
            if self.section(run, "self_train")["teacher"] == "offline":
                return {"maps_dir": self.teacher_folder(dataset, run)}
            cam = settings_dict(self.settings(run, "self_train").teacher_cam)
            return {"model_path": eps_model, "cam": cam, "amp": False}
        model = eps_model if target == "eps" else f"results/{dataset}/{run}/self_train/model.pt"
        seeds = self.settings(run, "seeds")
        return {"model_path": model, "cam": settings_dict(seeds.cam), "amp": seeds.amp}

    # ------------------------------------------------------------------------- ablations
    def ablation_rows(self, dataset: str) -> list[dict[str, Any]]:
        """One entry per (table, row, run, stage) of ``ablations:``, with its evaluation record."""
        return [
            {
                "table": table,
                "row": row["row"],
                "experiment": run,
                "seed": self.parse_run(run)[1],
                "stage": f"smaf_{stage}",
                "record": f"results/{dataset}/{run}/eval/smaf_{stage}_train_SegmentationClass.json",
            }
            for table, rows in self.ablations.items()
            for row in rows
            for run in self.run_names(row["experiment"])
            for stage in ABLATION_STAGES
        ]
