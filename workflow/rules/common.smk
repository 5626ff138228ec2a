# Helpers and input functions shared by the rules. No rules here.
import re
from pathlib import Path

from smaf.codehash import code_hash
from smaf.errors import ConfigError


def canonical(value):
    """`value` with every dict's keys sorted (recursively)."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


# Snakemake compares params by their text: with every dict of the config key-sorted once here,
# the same settings written in another key order (another config file, a --configfile
# override) rerun nothing. Experiments and ablation tables keep the order they are written in
# (the first experiment is the report's; tables and rows are listed in that order).
for _key in list(config):
    if _key not in ("experiments", "ablations"):
        config[_key] = canonical(config[_key])
config["experiments"] = {
    name: canonical(o or {}) for name, o in config["experiments"].items()
}
config["ablations"] = {
    t: canonical(rows) for t, rows in (config.get("ablations") or {}).items()
}

DATASET = config["dataset"]
if DATASET not in config["datasets"]:
    raise ConfigError(
        f"config: dataset '{DATASET}' is not declared under `datasets:` "
        f"(declared: {', '.join(sorted(config['datasets']))}). Fix `dataset:` or add the entry."
    )
#: Split roles every dataset provides (the values name the dataset's own split lists).
SPLIT_ROLES = ("train_aug", "train", "val")


#: Training-loop keys shared by every training stage (config `train:`) that change results:
#: they reach the rules as params, so changing one reruns training. The other `train:` keys
#: (device, checkpoint_every, log_every, channels_last, compile, gpus) only say where, how fast
#: and how verbosely a job runs; the scripts read them from the config
#: (smaf.config.runtime_settings) or the job's resources, which triggers nothing.
#: The random seed is added per run (parse_run).
TRAIN_KEYS = ("amp",)

#: Random seeds: every experiment runs once per seed. EPS pretraining (shared by all
#: experiments and runs) uses the first.
SEEDS = list(config["train"]["seeds"])
#: Run name of an experiment's extra seeds: results/<dataset>/<name>_seed<k>/.
REPLICATE = re.compile(r"^(?P<name>.+)_seed(?P<seed>[0-9]+)$")


#: GPUs (DDP processes) of each training job: its `gpu` resource.
TRAIN_GPUS = int(config["train"]["gpus"])


def _ablation_experiments():
    """Experiments declared by `ablations:` rows with overrides: name -> overrides."""
    found = {}
    for table, rows in (config.get("ablations") or {}).items():
        for row in rows:
            name = row["experiment"]
            if "overrides" not in row:
                continue
            if name in config["experiments"] or (
                name in found and found[name] != row["overrides"]
            ):
                raise ConfigError(
                    f"ablations.{table}: experiment '{name}' is defined twice with different "
                    "overrides (rename it, or drop `overrides` to reuse the existing one)."
                )
            found[name] = row["overrides"] or {}
    return found


#: Every experiment the workflow knows: `experiments:` plus the ablation rows' own.
EXPERIMENTS = {
    **config["experiments"],
    **_ablation_experiments(),
}
for _table, _rows in (config.get("ablations") or {}).items():
    for _row in _rows:
        if _row["experiment"] not in EXPERIMENTS:
            raise ConfigError(
                f"ablations.{_table}: row '{_row['row']}' names experiment "
                f"'{_row['experiment']}', which is neither under `experiments:` nor given "
                "`overrides`. Add one of them."
            )
for _name in EXPERIMENTS:
    if REPLICATE.match(_name):
        raise ConfigError(
            f"experiment name '{_name}' ends in _seed<k>, which names the extra runs of an "
            "experiment (train.seeds). Rename it."
        )


def run_names(name):
    """Run names of experiment `name`: `name` for the first seed, `name_seed<k>` for the others."""
    return [name if seed == SEEDS[0] else f"{name}_seed{seed}" for seed in SEEDS]


def parse_run(run):
    """(experiment name, random seed) of a run name (see run_names)."""
    m = REPLICATE.match(run)
    if m and m["name"] in EXPERIMENTS:
        return m["name"], int(m["seed"])
    return run, SEEDS[0]


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


def dataset_settings(wildcards):
    """What the dataset's source adapter reads: its config entry with the resolved folders."""
    ds = dataset_cfg(wildcards)
    return {**ds, "root": dataset_root(wildcards), "aug_mask_dir": aug_mask_dir(wildcards)}


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
    """Config section `section` with the overrides of experiment (or run) `experiment` applied."""
    name, _ = parse_run(experiment)
    return deep_merge(config[section], EXPERIMENTS[name].get(section, {}))


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
        shared = {k: config["train"][k] for k in TRAIN_KEYS}
        return {**shared, "seed": SEEDS[0], **config[section]}

    return get


def experiment_stage_params(section):
    """Like stage_params, with the experiment's overrides of `section` applied."""

    def get(wildcards):
        shared = {k: config["train"][k] for k in TRAIN_KEYS}
        seed = parse_run(wildcards.experiment)[1]
        return {**shared, "seed": seed, **experiment_cfg(wildcards, section)}

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
    inputs = {"index": data_path(wildcards)}
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
    inputs = {"index": data_path(wildcards), "model": f"{base}/pretrain/model.pt"}
    if experiment_cfg(wildcards, "self_train")["teacher"] == "offline":
        inputs["teacher"] = f"{base}/{teacher_owner(wildcards.experiment)}/teacher_maps"
    return inputs


def teacher_owner(run):
    """Experiment whose teacher_maps a run uses: the first one with the same teacher settings.

    The maps depend only on the EPS model and self_train.teacher_cam, so the extra seeds of an
    experiment, and experiments that change other settings, reuse one offline pass.
    """
    cam = experiment_section(run, "self_train")["teacher_cam"]
    return next(
        name
        for name in EXPERIMENTS
        if experiment_section(name, "self_train")["teacher_cam"] == cam
    )


# ------------------------------------------ seeds, CRF and evaluation (seeds/crf/evaluate.smk)
#: Classifiers whose seeds are made: the EPS model (pretrain) and the SMAF model (self_train).
CLASSIFIERS = ("eps", "smaf")
#: What is evaluated of each classifier: its CAM seeds and their CRF refinement.
SEED_STAGES = ("seed", "crf")


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


def eval_predictions(wildcards):
    """Label PNG folder scored by the evaluate rule, i.e. the seeds ({stage}=seed) or their CRF."""
    kind = "seeds" if wildcards.stage == "seed" else "crf"
    return f"results/{wildcards.dataset}/{wildcards.experiment}/{kind}/{wildcards.model}_{wildcards.split}"


def eval_meta(wildcards):
    """Fields the evaluate rule copies into its record (the columns of results/summary.csv)."""
    return {
        **run_meta(wildcards),
        "model": wildcards.model,
        "stage": f"{wildcards.model}_{wildcards.stage}",
        "split": wildcards.split,
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
    """Every evaluation record of the configured dataset, over all experiments and seeds."""
    return [
        f
        for name in config["experiments"]
        for run in run_names(name)
        for f in [
            *evaluation_targets(DATASET, run),
            *deeplab_eval_targets(DATASET, run),
        ]
    ]


def final_targets():
    """Everything `rule all` builds for the configured dataset."""
    return [
        f"results/{DATASET}/data/dataset.json",
        "results/summary.csv",
        "results/report.html",
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
    seed = parse_run(wildcards.experiment)[1]
    skip = ("test", "labels_from", "init_from")
    section = {k: v for k, v in deeplab_cfg(wildcards).items() if k not in skip}
    return {**shared, "seed": seed, **section}


def deeplab_train_inputs(wildcards):
    """Dataset index, the CRF-refined pseudo labels of train_aug and the ImageNet weights."""
    base = f"results/{wildcards.dataset}"
    cfg = deeplab_cfg(wildcards)
    inputs = {
        "index": data_path(wildcards),
        "labels": f"{base}/{wildcards.experiment}/crf/{cfg['labels_from']}_train_aug",
    }
    if cfg.get("pretrained"):
        # resources/downloads/<file> is made by the download rule.
        inputs["weights"] = cfg["pretrained"]
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
    return data_path(wildcards, "test_index.csv" if wildcards.pred_split == "test" else "index.csv")


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
    """Fields of a DeepLab evaluation record; `model` names the source of the pseudo labels."""
    return {
        **run_meta(wildcards),
        "stage": wildcards.stage,
        "split": wildcards.split,
        "model": deeplab_cfg(wildcards)["labels_from"],
    }


def deeplab_submission_inputs(wildcards):
    """Test predictions (CRF-refined unless deeplab.test.submission_crf is false)."""
    suffix = "_crf" if deeplab_cfg(wildcards)["test"]["submission_crf"] else ""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    return {"pred": f"{base}/pred_test{suffix}", "index": data_path(wildcards, "test_index.csv")}


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
    """Test archives of the experiments whose deeplab.test.submission is true (first seed)."""
    return [
        f"results/{dataset}/{run_names(name)[0]}/deeplab_submission.tar.gz"
        for name in config["experiments"]
        if experiment_section(name, "deeplab")["test"]["submission"]
    ]


# ---------------------------------------------------- ablations (rules/evaluate.smk: ablations)
#: What an ablation row reports: the SMAF model's seeds and their CRF, on the train split.
ABLATION_STAGES = ("seed", "crf")


def ablation_rows():
    """One entry per (table, row, run, stage) of `ablations:`, with its evaluation record."""
    return [
        {
            "table": table,
            "row": row["row"],
            "experiment": run,
            "seed": parse_run(run)[1],
            "stage": f"smaf_{stage}",
            "record": f"results/{DATASET}/{run}/eval/smaf_{stage}_train_SegmentationClass.json",
        }
        for table, rows in (config.get("ablations") or {}).items()
        for row in rows
        for run in run_names(row["experiment"])
        for stage in ABLATION_STAGES
    ]


# ------------------------------------------------- figures and the report (rules/report.smk)
def figure_split(wildcards):
    """Split whose images Fig. 1, 3, 4 and 5a show: train when the seeds are evaluated on it."""
    splits = experiment_cfg(wildcards, "evaluation")["splits"]
    return "train" if "train" in splits else splits[0]


def figure_label_dirs(wildcards):
    """Fig. 5a columns: title -> label folder (seeds of each evaluated classifier, then CRF)."""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}"
    models = experiment_cfg(wildcards, "evaluation")["models"]
    split = figure_split(wildcards)
    crf = "smaf" if "smaf" in models else models[-1]
    return {
        **{f"{m.upper()} seed": f"{base}/seeds/{m}_{split}" for m in models},
        f"{crf.upper()} seed + CRF": f"{base}/crf/{crf}_{split}",
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
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/seeds"
    split = figure_split(wildcards)
    return {
        "index": data_path(wildcards),
        "eps": f"{base}/eps_{split}",
        "smaf": f"{base}/smaf_{split}",
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
