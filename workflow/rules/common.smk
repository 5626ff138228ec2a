# Helpers and input functions shared by the rules. No rules here.
import math
import re
from pathlib import Path

from smaf.codehash import code_hash
from smaf.stages.staging import shard_names
from smaf.config import check_config
from smaf.data.index import role_count
from smaf.data.images import folder_fingerprint
from smaf.data.sources import coco as coco_source
from smaf.data.sources import source_fingerprint
from smaf.errors import ConfigError
from smaf.experiments import Experiments, canonical_config, deeplab_init

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
#: Split roles of the dataset index (the values name the dataset's own split lists).
SPLIT_ROLES = ("train_aug", "train", "val")

#: Random seeds: every experiment runs once per seed; EPS pretraining uses the first.
SEEDS = EXP.seeds
#: Every experiment the workflow knows: `experiments:` plus the ablation rows' own.
EXPERIMENTS = EXP.all
#: GPUs (DDP processes) of each training job: its `gpu` resource.
TRAIN_GPUS = int(config["train"]["gpus"])
run_names = EXP.run_names
parse_run = EXP.parse_run
experiment_section = EXP.section
teacher_owner = EXP.teacher_owner


def script_code(script):
    """Hash of workflow/scripts/`script` and of every smaf module it imports (a params entry).

    Snakemake's code trigger sees the script alone; with this, editing e.g. smaf/crf.py reruns
    the rules whose scripts reach that module, and no others.
    """
    base = Path(workflow.basedir)
    return code_hash(base / "workflow" / "scripts" / script, base / "src")


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in config["datasets"]),
    experiment="(" + "|".join(re.escape(e) for e in EXPERIMENTS) + ")(_seed[0-9]+)?",
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
    """Saliency folder of a dataset (synthetic: generated beside the images; a folder dataset:
    its `saliency`, possibly `compute`)."""
    ds = dataset_cfg(wildcards)
    if ds["source"] == "synthetic":
        return f"resources/{wildcards.dataset}/VOC2012/SALImages"
    if ds["source"] == "folder":
        return ds.get("saliency")
    return ds.get("saliency_dir")


def dataset_root(wildcards):
    """VOC2012-layout folder of a dataset (generated, downloaded or user-provided)."""
    ds = dataset_cfg(wildcards)
    if ds["source"] == "synthetic":
        return f"resources/{wildcards.dataset}/VOC2012"
    return ds["root"]


def dataset_settings(wildcards):
    """What the dataset's source adapter reads: its config entry with the resolved folders."""
    ds = dataset_cfg(wildcards)
    if ds["source"] == "folder":
        # `saliency: compute`: the saliency rule writes the maps there.
        return {**ds, "saliency_out": data_path(wildcards, "saliency")}
    return {
        **ds,
        "root": dataset_root(wildcards),
        "aug_mask_dir": aug_mask_dir(wildcards),
    }


def dataset_fingerprint(wildcards):
    """Names, sizes and mtimes of a user-provided dataset's files (a params entry): an edited
    split list or a replaced image reruns the dataset stage. None for data the workflow makes
    (generated or downloaded: Snakemake tracks those outputs itself)."""
    ds = dataset_cfg(wildcards)
    if ds.get("download", False):
        return None
    return source_fingerprint(ds["source"], dataset_settings(wildcards))


def data_path(wildcards, name="index.csv"):
    """results/<dataset>/data/<name>: the dataset index (or test_index.csv, dataset.json)."""
    return f"results/{wildcards.dataset}/data/{name}"


def test_index_inputs(wildcards):
    """What must exist before the test images are indexed: generated data or a manual item."""
    ds = dataset_cfg(wildcards)
    if ds.get("test_manual"):
        # Behind a login (VOC): the manual item stops with instructions until it is in place.
        return {"test_data": f"resources/manual/{ds['test_manual']}.ok"}
    return dataset_inputs(wildcards)


def dataset_inputs(wildcards):
    """What must exist before a dataset can be indexed: its generator's or download's output."""
    ds = dataset_cfg(wildcards)
    if ds["source"] == "folder":
        return {}  # the user's own files, tracked by dataset_fingerprint
    if ds["source"] == "synthetic":
        return {"root": f"resources/{wildcards.dataset}/VOC2012"}
    if ds["source"] == "coco":
        return coco_dataset_inputs(wildcards)  # rules/coco.smk
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


def experiment_cfg(wildcards, section):
    """Config section `section` with the overrides of experiment `{experiment}` applied."""
    return experiment_section(wildcards.experiment, section)


def experiment_field(section, key):
    """Input function giving `key` of `section` for the experiment in the wildcards."""

    def get(wildcards):
        return experiment_cfg(wildcards, section)[key]

    return get


def stage_params(section):
    """Input function: a training stage's params (pretraining: shared by every run)."""

    def get(wildcards):
        return EXP.train_params(None, section)

    return get


def experiment_stage_params(section):
    """Input function: a training stage's params for the run in the wildcards."""

    def get(wildcards):
        return EXP.train_params(wildcards.experiment, section)

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
    """Dataset index, plus saliency maps / ImageNet weights when they are manual downloads;
    with pretrain.init_checkpoint the checkpoint instead (no training, no saliency)."""
    inputs = {"index": data_path(wildcards)}
    trained = config["pretrain"].get("init_checkpoint")
    if trained:
        inputs["checkpoint"] = weights_input(trained)
        return inputs
    saliency = (
        dataset_saliency_dir(wildcards)
        if config["pretrain"]["method"] == "eps"
        else None
    )
    markers = manual_markers(saliency, config["model"].get("pretrained"))
    if markers:
        inputs["manual"] = markers
    if saliency == "compute":  # a folder dataset's maps, made by the saliency rule
        inputs["saliency"] = data_path(wildcards, "saliency.json")
    return inputs


def self_train_inputs(wildcards):
    """Dataset index, the pretrained model and (offline teacher) the teacher's maps."""
    base = f"results/{wildcards.dataset}"
    inputs = {"index": data_path(wildcards), "model": f"{base}/pretrain/model.pt"}
    if experiment_cfg(wildcards, "self_train")["teacher"] == "offline":
        inputs["teacher"] = EXP.teacher_folder(wildcards.dataset, wildcards.experiment)
    return inputs


# ------------------------------------------ seeds, CRF and evaluation (seeds/crf/evaluate.smk)


def classifier_path(dataset, experiment, model):
    """Model file of classifier `model`: eps = EPS pretraining, smaf = SMAF self-training."""
    if model == "eps":
        return f"results/{dataset}/pretrain/model.pt"
    return f"results/{dataset}/{experiment}/self_train/model.pt"


def classifier_model(wildcards):
    """Trained classifier behind {model} (see classifier_path)."""
    return classifier_path(wildcards.dataset, wildcards.experiment, wildcards.model)


def crf_method_params(wildcards):
    """Settings of the experiment's CRF method: section `crf.labels` or `crf.probs`."""
    crf = experiment_cfg(wildcards, "crf")
    return crf[crf["method"]]


# -------------------------------------------- shards: one split, many jobs (config `shards:`)
def shard_count(dataset, roles, index="index.csv"):
    """Jobs a per-image stage over `roles` of the dataset (or test) index is split into: 1, or
    ceil(images / shards.images_per_shard) up to shards.max, read from the index (the dataset
    stage is a checkpoint, so this waits for it)."""
    per = config["shards"]["images_per_shard"]
    if not per:
        return 1
    stage = (
        checkpoints.test_index
        if index == "test_index.csv"
        else checkpoints.prepare_dataset
    )
    path = stage.get(dataset=dataset).output.index
    count = role_count(path, roles)
    return max(1, min(config["shards"]["max"], math.ceil(count / per)))


def shard_files(pattern, n, **values):
    """Every shard's file of a stage: `pattern` with {shard} = 1of<n> .. <n>of<n>."""
    return [pattern.format(shard=shard, **values) for shard in shard_names(n)]


def seeds_roles(wildcards):
    """Splits a seeds folder covers: every split any run it serves needs."""
    return EXP.seeds_roles(wildcards.dataset, wildcards.experiment, wildcards.model)


def crf_roles(wildcards):
    """Splits a CRF folder covers: every split any run it serves needs."""
    return EXP.crf_roles(wildcards.dataset, wildcards.experiment, wildcards.model)


def _state(wildcards, stage):
    return f"results/{wildcards.dataset}/state/{wildcards.experiment}/{stage}"


def seeds_shards(wildcards):
    n = shard_count(wildcards.dataset, seeds_roles(wildcards))
    return shard_files("{base}.shards/{shard}.done", n, base=_out(wildcards, "seeds"))


def seeds_work_dirs(wildcards):
    n = shard_count(wildcards.dataset, seeds_roles(wildcards))
    return shard_files(
        "{base}/{shard}", n, base=_state(wildcards, f"seeds/{wildcards.model}")
    )


def crf_seeds(wildcards):
    """The seeds folder a CRF folder refines (EPS: possibly another run's)."""
    return seeds_folder(wildcards.dataset, wildcards.experiment, wildcards.model)


def crf_shards(wildcards):
    n = shard_count(wildcards.dataset, crf_roles(wildcards))
    return shard_files("{base}.shards/{shard}.done", n, base=_out(wildcards, "crf"))


def crf_work_dirs(wildcards):
    n = shard_count(wildcards.dataset, crf_roles(wildcards))
    return shard_files(
        "{base}/{shard}", n, base=_state(wildcards, f"crf/{wildcards.model}")
    )


def _out(wildcards, stage):
    return (
        f"results/{wildcards.dataset}/{wildcards.experiment}/{stage}/{wildcards.model}"
    )


def teacher_shards(wildcards):
    n = shard_count(wildcards.dataset, ["train_aug"])
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/teacher_maps"
    return shard_files("{base}.shards/{shard}.done", n, base=base)


def teacher_work_dirs(wildcards):
    n = shard_count(wildcards.dataset, ["train_aug"])
    return shard_files("{base}/{shard}", n, base=_state(wildcards, "teacher_maps"))


def _pred_shards(wildcards):
    index = "test_index.csv" if wildcards.pred_split == "test" else "index.csv"
    return shard_count(wildcards.dataset, [wildcards.pred_split], index)


def predict_shards(wildcards):
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab/pred_{wildcards.pred_split}"
    return shard_files("{base}.shards/{shard}.done", _pred_shards(wildcards), base=base)


def predict_work_dirs(wildcards):
    base = _state(wildcards, f"deeplab/pred_{wildcards.pred_split}")
    return shard_files("{base}/{shard}", _pred_shards(wildcards), base=base)


def deeplab_crf_shards(wildcards):
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab/pred_{wildcards.pred_split}_crf"
    return shard_files("{base}.shards/{shard}.done", _pred_shards(wildcards), base=base)


def deeplab_crf_work_dirs(wildcards):
    base = _state(wildcards, f"deeplab/pred_{wildcards.pred_split}_crf")
    return shard_files("{base}/{shard}", _pred_shards(wildcards), base=base)


#: An evaluation record's name: <model>_<seed|crf>_<split>_<gt> or <deeplab|deeplab_crf>_val_<gt>.
RECORD = re.compile(
    r"^(?:(?P<model>eps|smaf)_(?P<stage>seed|crf)|(?P<deeplab>deeplab(?:_crf)?))_"
    r"(?P<split>train_aug|train|val)_(?P<gt>SegmentationClass|SegmentationClassAug)$"
)


def _record(wildcards):
    m = RECORD.match(wildcards.record)
    if m is None:
        raise ConfigError(f"not an evaluation record: {wildcards.record}")
    return m


def record_role(wildcards):
    """The split an evaluation record scores."""
    return _record(wildcards)["split"]


def record_gt(wildcards):
    """The ground truth an evaluation record scores against."""
    return _record(wildcards)["gt"]


def record_predictions(wildcards):
    """The label folder an evaluation record scores (seeds, CRF, or DeepLab's predictions)."""
    m = _record(wildcards)
    ds, run = wildcards.dataset, wildcards.experiment
    if m["deeplab"]:
        suffix = "_crf" if m["deeplab"] == "deeplab_crf" else ""
        return f"results/{ds}/{run}/deeplab/pred_{m['split']}{suffix}"
    folder = seeds_folder if m["stage"] == "seed" else crf_folder
    return folder(ds, run, m["model"])


def eval_shards(wildcards):
    """The shards' confusion matrices of the record being gathered."""
    name = Path(wildcards_record_name(wildcards))
    n = shard_count(wildcards.dataset, [wildcards.split])
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/eval/{name}"
    return shard_files("{base}.shards/{shard}.npz", n, base=base)


def wildcards_record_name(wildcards):
    """The record name of an evaluate / deeplab_evaluate job (its output's file stem)."""
    if "model" in wildcards.keys():
        return f"{wildcards.model}_{wildcards.stage}_{wildcards.split}_{wildcards.gt}"
    return f"{wildcards.stage}_{wildcards.split}_{wildcards.gt}"


def seeds_folder(dataset, run, model):
    """The folder holding run's seeds of `model` (EPS: the first run with the same settings)."""
    return f"results/{dataset}/{EXP.seeds_owner(run, model)}/seeds/{model}"


def crf_folder(dataset, run, model):
    """The folder holding run's CRF labels of `model` (EPS: shared like its seeds)."""
    return f"results/{dataset}/{EXP.crf_owner(run, model)}/crf/{model}"


def eval_predictions(wildcards):
    """Label PNG folder scored by the evaluate rule, i.e. the seeds ({stage}=seed) or their CRF."""
    folder = seeds_folder if wildcards.stage == "seed" else crf_folder
    return folder(wildcards.dataset, wildcards.experiment, wildcards.model)


def eval_meta(wildcards):
    """Fields the evaluate rule copies into its record (the columns of results/summary.csv);
    `thr`: the seeds' background score (Table 2 says how it was chosen)."""
    return {
        **run_meta(wildcards),
        "model": wildcards.model,
        "stage": f"{wildcards.model}_{wildcards.stage}",
        "split": wildcards.split,
        "thr": experiment_cfg(wildcards, "seeds")["thr"],
    }


def run_meta(wildcards):
    """dataset, experiment (the run), group (the experiment) and seed of a run's records."""
    name, seed = parse_run(wildcards.experiment)
    return {
        "dataset": wildcards.dataset,
        "experiment": wildcards.experiment,
        "group": name,
        "seed": seed,
    }


def summary_inputs(wildcards):
    """Every evaluation record of the configured dataset, over all experiments and seeds."""
    return EXP.summary_records(DATASET)


def evaluation_targets(dataset, run):
    """Seed / CRF evaluation records of one run (the report's per-class tables)."""
    return EXP.seed_records(dataset, run)


def deeplab_eval_targets(dataset, run):
    """DeepLab's val evaluation records of one run."""
    return EXP.deeplab_records(dataset, run)


def final_targets():
    """Everything `rule all` builds for the configured dataset."""
    return [
        f"results/{DATASET}/data/dataset.json",
        "results/summary.csv",
        "results/report.html",
        *EXP.submission_archives(DATASET),
    ]


# ------------------------------------------------------------------ DeepLab (rules/deeplab.smk)
def deeplab_cfg(wildcards):
    """The `deeplab` section with the overrides of experiment `{experiment}` applied."""
    return experiment_cfg(wildcards, "deeplab")


#: Weight folders the workflow fills by extracting a download: folder -> `downloads:` entry.
EXTRACTED_WEIGHTS = {"resources/weights/deeplab_resnet101": "prototxt_and_model.zip"}


def weights_input(path):
    """What provides the weights or checkpoint file `path`: the extraction marker of its folder
    (extracted from a download by the extract_deeplab_init rule: init.caffemodel, or the trained
    train2_iter_20000.caffemodel as deeplab.init_checkpoint), a manual item's marker (the rule
    stops with instructions until it is there), or the file itself
    (resources/downloads/<file>: the download rule; else the user's)."""
    folder = Path(path).parent.as_posix()
    if EXTRACTED_WEIGHTS.get(folder) in config["downloads"]:
        return f"{folder}.extracted"
    return manual_markers(path) or path


def deeplab_train_inputs(wildcards):
    """Dataset index, the CRF-refined pseudo labels of train_aug and the init weights; with
    deeplab.init_checkpoint only the index and that checkpoint (evaluation only)."""
    base = f"results/{wildcards.dataset}"
    cfg = deeplab_cfg(wildcards)
    if cfg.get("init_checkpoint"):
        return {
            "index": data_path(wildcards),
            "checkpoint": weights_input(cfg["init_checkpoint"]),
        }
    inputs = {
        "index": data_path(wildcards),
        "labels": crf_folder(
            wildcards.dataset, wildcards.experiment, cfg["labels_from"]
        ),
    }
    if cfg.get("pretrained"):
        inputs["weights"] = weights_input(cfg["pretrained"])
    if cfg.get("init_from"):
        inputs["init"] = classifier_path(
            wildcards.dataset, wildcards.experiment, cfg["init_from"]
        )
    return inputs


def deeplab_test_field(key):
    """Input function giving `deeplab.test.<key>` for the experiment in the wildcards."""

    def get(wildcards):
        return deeplab_cfg(wildcards)["test"][key]

    return get


def split_index(wildcards):
    """Index of the split DeepLab predicts (`pred_split`): the test images' own index for
    test, the dataset index for val."""
    return data_path(
        wildcards, "test_index.csv" if wildcards.pred_split == "test" else "index.csv"
    )


def deeplab_predict_inputs(wildcards):
    """The trained DeepLab model and the split's index."""
    model = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab/model.pt"
    return {"model": model, "index": split_index(wildcards)}


def deeplab_crf_inputs(wildcards):
    """The split's MSC logits (from deeplab_predict) and the split's index."""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    logits = f"{base}/logits_{wildcards.pred_split}"
    return {"logits": logits, "index": split_index(wildcards)}


def deeplab_eval_predictions(wildcards):
    """Predictions scored as stage `deeplab` (pred_<split>) or `deeplab_crf` (pred_<split>_crf)."""
    suffix = "_crf" if wildcards.stage == "deeplab_crf" else ""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    return f"{base}/pred_{wildcards.split}{suffix}"


def deeplab_eval_meta(wildcards):
    """Fields of a DeepLab evaluation record; `model` names the source of the pseudo labels,
    `init` the weights DeepLab started from (Table 1's init column)."""
    cfg = deeplab_cfg(wildcards)
    return {
        **run_meta(wildcards),
        "stage": wildcards.stage,
        "split": wildcards.split,
        "model": cfg["labels_from"],
        "init": deeplab_init(cfg),
    }


def deeplab_submission_inputs(wildcards):
    """Test predictions (CRF-refined unless deeplab.test.submission_crf is false)."""
    suffix = "_crf" if deeplab_cfg(wildcards)["test"]["submission_crf"] else ""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    return {
        "pred": f"{base}/pred_test{suffix}",
        "index": data_path(wildcards, "test_index.csv"),
    }


def ablation_rows():
    """One entry per (table, row, run, stage) of `ablations:`, with its evaluation record."""
    return EXP.ablation_rows(DATASET)


# ------------------------------------------------- figures and the report (rules/report.smk)
def figure_split(wildcards):
    """Split whose images Fig. 1, 3, 4 and 5a show (smaf.experiments.Experiments.figure_split)."""
    return EXP.figure_split(wildcards.dataset, wildcards.experiment)


def figure_label_dirs(wildcards):
    """Fig. 5a columns: title -> label folder (seeds of each evaluated classifier, then CRF)."""
    ds, run = wildcards.dataset, wildcards.experiment
    models = experiment_cfg(wildcards, "evaluation")["models"]
    crf = "smaf" if "smaf" in models else models[-1]
    return {
        **{f"{m.upper()} seed": seeds_folder(ds, run, m) for m in models},
        f"{crf.upper()} seed + CRF": crf_folder(ds, run, crf),
    }


def figure_pred_dirs(wildcards):
    """Fig. 5b columns: title -> DeepLab's val predictions (without / with its CRF)."""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    return {"DeepLab": f"{base}/pred_val", "DeepLab + CRF": f"{base}/pred_val_crf"}


def figure_label_inputs(wildcards):
    """Index and every label folder of Fig. 5a/5b."""
    return {
        "index": data_path(wildcards),
        "labels": list(figure_label_dirs(wildcards).values()),
        "preds": list(figure_pred_dirs(wildcards).values()),
    }


def figure_seed_inputs(wildcards):
    """Fig. 3: the index and the EPS and SMAF seeds of the figure split (their maps/ are read)."""
    ds, run = wildcards.dataset, wildcards.experiment
    return {
        "index": data_path(wildcards),
        "eps": seeds_folder(ds, run, "eps"),
        "smaf": seeds_folder(ds, run, "smaf"),
    }


def curve_histories(wildcards):
    """Training histories of one experiment: EPS pretraining, self-training, DeepLab."""
    return [
        f"results/{wildcards.dataset}/pretrain/history.csv",
        f"results/{wildcards.dataset}/{wildcards.experiment}/self_train/history.csv",
        f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab/history.csv",
    ]


def report_evals(experiment):
    """Per-class IoU CSVs (beside each evaluation record) of one experiment."""
    return [
        f.replace(".json", ".csv")
        for f in [
            *evaluation_targets(DATASET, experiment),
            *deeplab_eval_targets(DATASET, experiment),
        ]
    ]


def templates_code():
    """Hash of the page templates (package data, not seen by script_code): a params entry."""
    import hashlib

    folder = Path(workflow.basedir, "src", "smaf", "templates")
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------- segment new images (rules/predict.smk)
def predict_cfg():
    """The `predict` section; its images folder must be set to build a prediction."""
    section = config.get("predict") or {}
    if not section.get("images"):
        raise ConfigError(
            "config: set predict.images to the folder of images to segment (and predict.name "
            "to the name of the output folder)."
        )
    return section


def predict_inputs(wildcards):
    """The model (DeepLab, or the EPS / SMAF classifier for CAMs) and the images folder."""
    cfg = predict_cfg()
    run = f"results/{wildcards.dataset}/{wildcards.experiment}"
    if cfg.get("model", "deeplab") == "deeplab":
        model = f"{run}/deeplab/model.pt"
    else:
        model = classifier_path(wildcards.dataset, wildcards.experiment, cfg["model"])
    return {"model": model, "images": cfg["images"]}


def predict_settings(wildcards):
    """What the predictions depend on besides the model: the section and the inference
    settings of the run (DeepLab's test flip and CRF; the seeds' CAM settings)."""
    cfg = predict_cfg()
    overlay = cfg.get("overlay", True)
    if cfg.get("model", "deeplab") == "deeplab":
        test = deeplab_cfg(wildcards)["test"]
        return {
            "cams": False,
            "flip": test["flip"],
            "crf": test["crf"] if cfg.get("crf", True) else False,
            "overlay": overlay,
        }
    seeds = experiment_cfg(wildcards, "seeds")
    return {
        "cams": True,
        "flip": seeds["flip"],
        "scales": seeds["scales"],
        "cam": {"resize_mode": seeds["resize_mode"], "eps": seeds["eps"]},
        "thr": seeds["thr"],
        "amp": seeds["amp"],
        "overlay": overlay,
    }


def predict_images_fingerprint(wildcards):
    """Names, sizes and mtimes of the images: an added or replaced image reruns the rule."""
    return folder_fingerprint(predict_cfg()["images"])


def predict_targets(wildcards):
    """The prediction folder of every listed experiment (first seed) on the dataset (an input
    function: the section is checked only when the target is asked for)."""
    name = predict_cfg().get("name", "images")
    return [f"results/{DATASET}/{run}/predict/{name}" for run in EXP.listed]


# ------------------------------------------------------------ MS-COCO 2014 (rules/coco.smk)

#: The official zips (downloads: <name>.zip), each unpacking one top folder into `root`.
COCO_ARCHIVES = ("train2014", "val2014", "annotations_trainval2014")
#: Datasets whose source is coco (the rules below match only theirs).
COCO_DATASETS = [d for d, v in config["datasets"].items() if v["source"] == "coco"]


def coco_set_masks_dir(wildcards):
    """Folder of the converted masks of {coco_set}: <masks_dir>/<set>."""
    ds = dataset_cfg(wildcards)
    return str(coco_source.masks_dir(ds, wildcards.dataset) / wildcards.coco_set)


def coco_annotations(wildcards):
    """<root>/annotations/instances_{coco_set}.json."""
    ds = dataset_cfg(wildcards)
    return str(coco_source.annotation_path(ds["root"], wildcards.coco_set))


def coco_annotations_input(wildcards):
    """The annotations, or (download: true) the marker of their extraction."""
    if dataset_cfg(wildcards).get("download", False):
        return f"resources/{wildcards.dataset}/annotations_trainval2014.zip.extracted"
    return coco_annotations(wildcards)


def coco_shard_markers(wildcards):
    """The markers of the `mask_shards` conversion jobs of {coco_set}."""
    n = int(dataset_cfg(wildcards).get("mask_shards", 16))
    base = f"resources/{wildcards.dataset}/masks/{wildcards.coco_set}"
    return [f"{base}/shard{k}of{n}.done" for k in range(1, n + 1)]


def coco_masks_mem_mb(wildcards):
    """Memory of one conversion job: the whole instances file is loaded (json: about 8x its
    size in Python objects); 4 GB while the file is not there yet (train2014: 332 MB).
    """
    path = Path(coco_annotations(wildcards))
    if not path.is_file():
        return 4000
    return max(1000, 500 + 8 * path.stat().st_size // 1_000_000)


def coco_dataset_inputs(wildcards):
    """What the index of a coco dataset waits for: each named set's gathered masks and, when
    downloaded, the extraction of its images."""
    ds = dataset_cfg(wildcards)
    sets = coco_source.coco_sets(ds)
    inputs = {"masks": [f"resources/{wildcards.dataset}/masks/{s}.done" for s in sets]}
    if ds.get("download", False):
        inputs["images"] = [
            f"resources/{wildcards.dataset}/{s}.zip.extracted" for s in sets
        ]
    return inputs


# ------------------------------------------ diagnostics (rules/diagnostics.smk: thr_sweep)
def thr_sweep_seed_dirs(wildcards):
    """model -> the train_aug seeds folder (its fused maps) of each swept model."""
    return {
        m: seeds_folder(wildcards.dataset, wildcards.experiment, m)
        for m in config["thr_sweep"]["models"]
    }


def thr_sweep_gt(wildcards):
    """The held-out images' ground truth: SegmentationClassAug where the dataset has it (VOC:
    the only masks of train_aug minus train), else SegmentationClass."""
    if EXP.has_aug_masks(wildcards.dataset):
        return "SegmentationClassAug"
    return "SegmentationClass"
