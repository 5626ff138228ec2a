# Helpers and input functions shared by the rules. No rules here.
import re
from pathlib import Path

from smaf.errors import ConfigError

DATASET = config["dataset"]
if DATASET not in config["datasets"]:
    raise ConfigError(
        f"config: dataset '{DATASET}' is not declared under `datasets:` "
        f"(declared: {', '.join(sorted(config['datasets']))}). Fix `dataset:` or add the entry."
    )
#: Split roles every dataset provides (the values name the dataset's own split lists).
SPLIT_ROLES = ("train_aug", "train", "val")


#: Training-loop keys shared by every training stage (config `train:`).
TRAIN_KEYS = ("device", "amp", "seed", "checkpoint_every", "log_every")


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in config["datasets"]),
    experiment="|".join(re.escape(e) for e in config["experiments"]),
    split="|".join(SPLIT_ROLES),


def dataset_cfg(wildcards):
    """The `datasets:` entry of the dataset in the wildcards."""
    return config["datasets"][wildcards.dataset]


def dataset_field(key, default=None):
    """Input function giving field `key` of the dataset's `datasets:` entry."""

    def get(wildcards):
        return dataset_cfg(wildcards).get(key, default)

    return get


def dataset_saliency_dir(wildcards):
    """Saliency folder of a dataset (synthetic: generated beside the images)."""
    ds = dataset_cfg(wildcards)
    if ds["source"] == "synthetic":
        return f"resources/{wildcards.dataset}/VOC2012/SALImages"
    return ds.get("saliency_dir")


def dataset_root(wildcards):
    """VOC2012-layout folder of a dataset (generated, downloaded or user-provided)."""
    ds = dataset_cfg(wildcards)
    if ds["source"] == "synthetic":
        return f"resources/{wildcards.dataset}/VOC2012"
    return ds["root"]


def dataset_inputs(wildcards):
    """What must exist before a dataset can be indexed: its generator's or download's output."""
    ds = dataset_cfg(wildcards)
    if ds["source"] == "synthetic":
        return {"root": f"resources/{wildcards.dataset}/VOC2012"}
    inputs = {}
    if ds.get("download", False):
        inputs["root"] = f"resources/{wildcards.dataset}/VOCtrainval.extracted"
        aug = ds.get("aug_source", "none")
        if aug != "none":
            inputs["aug"] = (
                f"resources/{wildcards.dataset}/SegmentationClassAug.{aug}.extracted"
            )
    return inputs


def download_field(key):
    """Input function giving field `key` (url, md5, sha256) of the `downloads:` entry."""

    def get(wildcards):
        return config["downloads"][wildcards.file].get(key)

    return get


def manual_field(key):
    """Input function giving field `key` (path, instructions) of the `manual:` entry."""

    def get(wildcards):
        return config["manual"][wildcards.item][key]

    return get


def voc_extract_dest(wildcards):
    """Where VOCtrainval is unpacked so that the configured root is <dest>/VOCdevkit/VOC2012."""
    root = Path(dataset_cfg(wildcards)["root"])
    if root.parts[-2:] != ("VOCdevkit", "VOC2012"):
        raise ConfigError(
            f"datasets.{wildcards.dataset}.root must end in VOCdevkit/VOC2012 when "
            f"download: true (got {root})."
        )
    return str(root.parent.parent)


def aug_extract_dest(wildcards):
    """Parent of the configured SegmentationClassAug folder (the zip holds that folder)."""
    return str(Path(dataset_cfg(wildcards)["aug_mask_dir"]).parent)


def aug_mask_dir(wildcards):
    """SegmentationClassAug folder of a dataset, or None."""
    ds = dataset_cfg(wildcards)
    return ds.get("aug_mask_dir") if ds.get("aug_source", "none") != "none" else None


def synthetic_params(wildcards):
    """Generator settings of a synthetic dataset (plus its class count)."""
    ds = dataset_cfg(wildcards)
    return {**ds.get("synthetic", {}), "num_classes": ds["num_classes"]}


def deep_merge(base, override):
    """`base` with `override` merged in, key by key (dicts recursively; others replaced)."""
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def experiment_section(experiment, section):
    """Config section `section` with the overrides of experiment `experiment` applied."""
    overrides = config["experiments"][experiment] or {}
    return deep_merge(config[section], overrides.get(section, {}))


def experiment_cfg(wildcards, section):
    """Config section `section` with the overrides of experiment `{experiment}` applied."""
    return experiment_section(wildcards.experiment, section)


def experiment_field(section, key):
    """Input function giving `key` of `section` for the experiment in the wildcards."""

    def get(wildcards):
        return experiment_cfg(wildcards, section)[key]

    return get


def stage_params(section):
    """Input function: a training stage's section plus the shared `train:` loop keys."""

    def get(wildcards):
        return {**{k: config["train"][k] for k in TRAIN_KEYS}, **config[section]}

    return get


def experiment_stage_params(section):
    """Like stage_params, with the experiment's overrides of `section` applied."""

    def get(wildcards):
        shared = {k: config["train"][k] for k in TRAIN_KEYS}
        return {**shared, **experiment_cfg(wildcards, section)}

    return get


def manual_markers(*paths):
    """Markers of the `manual:` items whose path is one of `paths` (their rule checks them)."""
    wanted = {str(Path(p)) for p in paths if p}
    return [
        f"resources/manual/{name}.ok"
        for name, item in config["manual"].items()
        if str(Path(item["path"])) in wanted
    ]


def pretrain_inputs(wildcards):
    """Dataset index, plus saliency maps / ImageNet weights when they are manual downloads."""
    base = f"results/{wildcards.dataset}"
    inputs = {
        "info": f"{base}/data/dataset.json",
        "split": f"{base}/data/splits/train_aug.txt",
        "labels": f"{base}/data/cls_labels.csv",
    }
    saliency = (
        dataset_saliency_dir(wildcards)
        if config["pretrain"]["method"] == "eps"
        else None
    )
    markers = manual_markers(saliency, config["model"].get("pretrained"))
    if markers:
        inputs["manual"] = markers
    return inputs


def self_train_inputs(wildcards):
    """Dataset index, the pretrained model and (offline teacher) the teacher's maps."""
    base = f"results/{wildcards.dataset}"
    inputs = {
        "info": f"{base}/data/dataset.json",
        "split": f"{base}/data/splits/train_aug.txt",
        "labels": f"{base}/data/cls_labels.csv",
        "model": f"{base}/pretrain/model.pt",
    }
    if experiment_cfg(wildcards, "self_train")["teacher"] == "offline":
        inputs["teacher"] = f"{base}/{wildcards.experiment}/teacher_maps"
    return inputs


# ------------------------------------------ seeds, CRF and evaluation (seeds/crf/evaluate.smk)
#: Classifiers whose seeds are made: the EPS model (pretrain) and the SMAF model (self_train).
CLASSIFIERS = ("eps", "smaf")
#: What is evaluated of each classifier: its CAM seeds and their CRF refinement.
SEED_STAGES = ("seed", "crf")


def classifier_model(wildcards):
    """Trained classifier behind {model}: eps = EPS pretraining, smaf = SMAF self-training."""
    if wildcards.model == "eps":
        return f"results/{wildcards.dataset}/pretrain/model.pt"
    return f"results/{wildcards.dataset}/{wildcards.experiment}/self_train/model.pt"


def crf_method_params(wildcards):
    """Settings of the experiment's CRF method: section `crf.labels` or `crf.probs`."""
    crf = experiment_cfg(wildcards, "crf")
    return crf[crf["method"]]


def eval_predictions(wildcards):
    """Label PNG folder scored by the evaluate rule, i.e. the seeds ({stage}=seed) or their CRF."""
    kind = "seeds" if wildcards.stage == "seed" else "crf"
    return f"results/{wildcards.dataset}/{wildcards.experiment}/{kind}/{wildcards.model}_{wildcards.split}"


def eval_meta(wildcards):
    """Fields the evaluate rule copies into its record (the columns of results/summary.csv)."""
    return {
        "dataset": wildcards.dataset,
        "experiment": wildcards.experiment,
        "model": wildcards.model,
        "stage": f"{wildcards.model}_{wildcards.stage}",
        "split": wildcards.split,
    }


def dataset_has_aug_masks(dataset):
    """Whether `dataset` has SegmentationClassAug masks (downloaded, converted or present)."""
    ds = config["datasets"][dataset]
    if ds["source"] == "synthetic":
        return False  # the generator writes SegmentationClass only
    if ds.get("aug_source", "none") != "none":
        return True  # the workflow downloads / converts them
    if ds.get("aug_mask_dir"):
        return Path(ds["aug_mask_dir"]).is_dir()
    return Path(ds["root"], "SegmentationClassAug").is_dir()


def evaluation_targets(dataset, experiment):
    """Evaluation records of one experiment: models x {seed, crf} x splits x available gts."""
    ev = experiment_section(experiment, "evaluation")
    gts = [
        g
        for g in ev["gt"]
        if g != "SegmentationClassAug" or dataset_has_aug_masks(dataset)
    ]
    return expand(
        "results/{dataset}/{experiment}/eval/{model}_{stage}_{split}_{gt}.json",
        dataset=dataset,
        experiment=experiment,
        model=ev["models"],
        stage=SEED_STAGES,
        split=ev["splits"],
        gt=gts,
    )


def summary_inputs(wildcards):
    """Every evaluation record of the configured dataset, over all experiments."""
    return [
        f
        for name in config["experiments"]
        for f in [
            *evaluation_targets(DATASET, name),
            *deeplab_eval_targets(DATASET, name),
        ]
    ]


def final_targets():
    """Everything `rule all` builds for the configured dataset."""
    return [
        f"results/{DATASET}/data/dataset.json",
        "results/summary.csv",
        *deeplab_submission_targets(DATASET),
    ]


# ------------------------------------------------------------------ DeepLab (rules/deeplab.smk)
#: How DeepLab's val predictions are scored: MSC alone and MSC + CRF (stages in summary.csv).
DEEPLAB_STAGES = ("deeplab", "deeplab_crf")


def deeplab_cfg(wildcards):
    """The `deeplab` section with the overrides of experiment `{experiment}` applied."""
    return experiment_cfg(wildcards, "deeplab")


def deeplab_train_params(wildcards):
    """DeepLab's model + training keys (not `test`/`labels_from`) plus the shared loop keys."""
    shared = {k: config["train"][k] for k in TRAIN_KEYS}
    skip = ("test", "labels_from")
    section = {k: v for k, v in deeplab_cfg(wildcards).items() if k not in skip}
    return {**shared, **section}


def deeplab_train_inputs(wildcards):
    """Dataset index, the CRF-refined pseudo labels of train_aug and the ImageNet weights."""
    base = f"results/{wildcards.dataset}"
    cfg = deeplab_cfg(wildcards)
    inputs = {
        "info": f"{base}/data/dataset.json",
        "split": f"{base}/data/splits/train_aug.txt",
        "labels": f"{base}/{wildcards.experiment}/crf/{cfg['labels_from']}_train_aug",
    }
    if cfg.get("pretrained"):
        # resources/downloads/<file> is made by the download rule.
        inputs["weights"] = cfg["pretrained"]
    return inputs


def deeplab_test_field(key):
    """Input function giving `deeplab.test.<key>` for the experiment in the wildcards."""

    def get(wildcards):
        return deeplab_cfg(wildcards)["test"][key]

    return get


def dataset_test_root(wildcards):
    """VOC2012-layout folder of the test images (`test_root`, default: the dataset root)."""
    return dataset_cfg(wildcards).get("test_root") or dataset_root(wildcards)


def deeplab_test_split_file(wildcards):
    """The test list: <test_root>/ImageSets/Segmentation/<splits.test>.txt (no masks needed)."""
    name = dataset_cfg(wildcards)["splits"].get("test", "test")
    return f"{dataset_test_root(wildcards)}/ImageSets/Segmentation/{name}.txt"


def deeplab_split_root(wildcards):
    """Image folder of the split DeepLab predicts (`pred_split`: val or test)."""
    if wildcards.pred_split == "test":
        return dataset_test_root(wildcards)
    return dataset_root(wildcards)


def deeplab_split_file(wildcards):
    """Id list of the split DeepLab predicts: the dataset index (val) or the test list."""
    if wildcards.pred_split == "test":
        return deeplab_test_split_file(wildcards)
    return f"results/{wildcards.dataset}/data/splits/{wildcards.pred_split}.txt"


def deeplab_split_inputs(wildcards):
    """What must exist before a split is predicted: its list (val), the test images (test)."""
    if wildcards.pred_split != "test":
        return {"split": deeplab_split_file(wildcards)}
    ds = dataset_cfg(wildcards)
    if ds.get("test_manual"):
        # Behind a login (VOC): the manual item stops with instructions until it is in place.
        return {"test_data": f"resources/manual/{ds['test_manual']}.ok"}
    if ds["source"] == "synthetic" and not ds.get("test_root"):
        return {"test_data": dataset_root(wildcards)}  # generated with the dataset
    return {}


def deeplab_predict_inputs(wildcards):
    """The trained DeepLab model and the split's inputs."""
    model = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab/model.pt"
    return {"model": model, **deeplab_split_inputs(wildcards)}


def deeplab_crf_inputs(wildcards):
    """The split's MSC logits (from deeplab_predict) and the split's inputs."""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    logits = f"{base}/logits_{wildcards.pred_split}"
    return {"logits": logits, **deeplab_split_inputs(wildcards)}


def deeplab_eval_predictions(wildcards):
    """Predictions scored as stage `deeplab` (pred_<split>) or `deeplab_crf` (pred_<split>_crf)."""
    suffix = "_crf" if wildcards.stage == "deeplab_crf" else ""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    return f"{base}/pred_{wildcards.split}{suffix}"


def deeplab_eval_meta(wildcards):
    """Fields of a DeepLab evaluation record; `model` names the source of the pseudo labels."""
    return {
        "dataset": wildcards.dataset,
        "experiment": wildcards.experiment,
        "stage": wildcards.stage,
        "split": wildcards.split,
        "model": deeplab_cfg(wildcards)["labels_from"],
    }


def deeplab_submission_inputs(wildcards):
    """Test predictions (CRF-refined unless deeplab.test.submission_crf is false)."""
    suffix = "_crf" if deeplab_cfg(wildcards)["test"]["submission_crf"] else ""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    return {"pred": f"{base}/pred_test{suffix}"}


def deeplab_eval_targets(dataset, experiment):
    """DeepLab's val records of one experiment: DEEPLAB_STAGES x the available gts."""
    gts = [
        g
        for g in experiment_section(experiment, "evaluation")["gt"]
        if g != "SegmentationClassAug" or dataset_has_aug_masks(dataset)
    ]
    return expand(
        "results/{dataset}/{experiment}/eval/{stage}_val_{gt}.json",
        dataset=dataset,
        experiment=experiment,
        stage=DEEPLAB_STAGES,
        gt=gts,
    )


def deeplab_submission_targets(dataset):
    """Test archives of the experiments whose deeplab.test.submission is true."""
    return [
        f"results/{dataset}/{name}/deeplab_submission.tar.gz"
        for name in config["experiments"]
        if experiment_section(name, "deeplab")["test"]["submission"]
    ]
