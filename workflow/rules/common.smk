# Helpers and input functions shared by the rules (no rules here): the config, experiments and
# runs, the code hash, the training inputs. The others: common_data.smk (datasets, downloads,
# COCO), common_stages.smk (seeds, CRF, shards, evaluation, DeepLab), common_outputs.smk
# (figures, report, predictions, diagnostics).
import math
import re
from dataclasses import is_dataclass
from operator import attrgetter
from pathlib import Path

from smaf.codehash import code_hash
from smaf.staging import shard_names
from smaf.config import check_config, settings_dict
from smaf.data.index import ALL_ROLES, role_count, rows_fingerprint
from smaf.data.images import folder_fingerprint
from smaf.data.sources import coco as coco_source
from smaf.data.sources import source_fingerprint
from smaf.errors import ConfigError
from smaf.config import is_auto
from smaf.experiments import Experiments, canonical_config
from smaf.experiments import eps_is_trained as experiments_eps_is_trained
from smaf.provenance import deeplab_init

# Snakemake compares params by their text: with every dict of the config key-sorted once here,
# the same settings written in another key order (another config file, a --configfile
# override) rerun nothing (smaf.experiments.canonical_config).
config.update(canonical_config(config))
#: Experiments x seeds, ablation rows and every run's merged config (smaf.experiments).
EXP = Experiments(config)
# Each experiment's overrides, merged into the config, must pass the same schema and the checks
# of value combinations, before any job runs.
for _name in EXP.all:
    check_config(EXP.merged_config(_name), SCHEMA, f"experiment '{_name}'")

DATASET = config["dataset"]
if DATASET not in config["datasets"]:
    raise ConfigError(
        f"config: dataset '{DATASET}' is not declared under `datasets:` "
        f"(declared: {', '.join(sorted(config['datasets']))}). Fix `dataset:` or add the entry."
    )
# thr: auto needs held-out masks: say so now rather than when the sweep runs.
EXP.check_thr_auto(DATASET)
#: Split roles of the dataset index (the values name the dataset's own split lists).
SPLIT_ROLES = ("train_aug", "train", "val")

#: Random seeds: every experiment runs once per seed; EPS pretraining uses the first.
SEEDS = EXP.seeds
#: Every experiment the workflow knows: `experiments:` plus the ablation rows' own.
EXPERIMENTS = EXP.all
#: The CLIP base (pretrain.method clip): no pretraining job; the base model is `clip`.
CLIP_BASE = EXP.base == "clip"
#: GPUs (DDP processes) of each training job: its `gpu` resource.
TRAIN_GPUS = int(config["train"]["gpus"])
run_names = EXP.run_names
parse_run = EXP.parse_run
experiment_section = EXP.section
teacher_owner = EXP.teacher_owner


def script_code(script):
    """Hash of workflow/scripts/`script` and of every smaf module it imports (a params entry).

    Snakemake's code trigger sees the script alone; with this, editing e.g. smaf/crf.py reruns
    the rules whose scripts reach that module, and no others. Cached in .snakemake/ of the
    working folder while the files are unchanged (parsing them takes a second at every start).
    """
    base = Path(workflow.basedir)
    script_path = base / "workflow" / "scripts" / script
    return code_hash(script_path, base / "src", cache=CODE_HASH_CACHE)


#: The code hashes of the last start (smaf.codehash): reused while their files are unchanged.
CODE_HASH_CACHE = Path(".snakemake") / "smaf-code-hashes.json"


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in config["datasets"]),
    experiment="(" + "|".join(re.escape(e) for e in EXPERIMENTS) + ")(_seed[0-9]+)?",
    split="|".join(SPLIT_ROLES),


def experiment_cfg(wildcards, section):
    """Config section `section` with the overrides of experiment `{experiment}` applied."""
    return experiment_section(wildcards.experiment, section)


def experiment_field(section, key):
    """Input function giving `key` of `section` for the experiment in the wildcards."""

    def get(wildcards):
        return experiment_cfg(wildcards, section)[key]

    return get


def stage_settings(section, part=None):
    """Input function: the typed settings of `section` for the run in the wildcards (none:
    pretraining, shared by every run) as the rule's one params entry, key-sorted
    (smaf.experiments.Experiments.settings; runtime keys are not in it), or their `part`
    (e.g. "test.crf": DeepLab's CRF)."""

    def get(wildcards):
        settings = EXP.settings(getattr(wildcards, "experiment", None), section)
        if part is None:
            return settings.params()
        value = attrgetter(part)(settings)
        return settings_dict(value, params=True) if is_dataclass(value) else value

    return get


def teacher_settings(wildcards):
    """The offline teacher pass's settings (smaf.experiments.Experiments.teacher_settings):
    the seeds computation with the teacher's CAM and the previews' background score. None on
    the CLIP base (its teacher pass is CLIP's: Experiments.clip_settings)."""
    if CLIP_BASE:
        return None
    return EXP.teacher_settings(wildcards.experiment).params()


def manual_markers(*paths):
    """Markers of the `manual:` items whose path is one of `paths` (their rule checks them)."""
    wanted = {str(Path(p)) for p in paths if p}
    return [
        f"resources/manual/{name}.ok"
        for name, item in config["manual"].items()
        if str(Path(item["path"])) in wanted
    ]


def eps_is_trained():
    """Whether EPS pretraining runs, and so needs a saliency map per training image
    (smaf.experiments.eps_is_trained; check-config asks the same)."""
    return experiments_eps_is_trained(config)


def teacher_maps_inputs(wildcards):
    """Dataset index and the teacher: the pretrained classifier, or the CLIP weights."""
    inputs = {"index": index_input(wildcards)}
    if CLIP_BASE:
        inputs["weights"] = clip_weights_input(wildcards)
    else:
        inputs["model"] = f"results/{wildcards.dataset}/pretrain/model.pt"
    return inputs


def pretrain_inputs(wildcards):
    """Dataset index, plus saliency maps / ImageNet weights when they are manual downloads;
    with pretrain.init_checkpoint the checkpoint instead (no training, no saliency)."""
    inputs = {"index": index_input(wildcards)}
    trained = config["pretrain"].get("init_checkpoint")
    if trained:
        inputs["checkpoint"] = weights_input(trained)
        return inputs
    saliency = dataset_saliency_dir(wildcards) if eps_is_trained() else None
    markers = manual_markers(saliency, config["model"].get("pretrained"))
    if markers:
        inputs["manual"] = markers
    if saliency == "compute":  # a folder dataset's maps, made by the saliency rule
        inputs["saliency"] = data_path(wildcards, "saliency.json")
    return inputs


def self_train_inputs(wildcards):
    """Dataset index, the pretrained model (none on the CLIP base: the student is built from
    `model:`, and its `model.pretrained` weights when a manual item) and (offline teacher) the
    teacher's maps."""
    base = f"results/{wildcards.dataset}"
    inputs = {"index": index_input(wildcards)}
    if CLIP_BASE:
        markers = manual_markers(config["model"].get("pretrained"))
        if markers:
            inputs["manual"] = markers
    else:
        inputs["model"] = f"{base}/pretrain/model.pt"
    if experiment_cfg(wildcards, "self_train")["teacher"] == "offline":
        inputs["teacher"] = EXP.teacher_folder(wildcards.dataset, wildcards.experiment)
    return {**inputs, **thr_auto_input("self_train", "teacher")(wildcards)}
