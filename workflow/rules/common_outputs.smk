# Input functions of what the runs produce for people: figures and the report, predictions of
# new images, diagnostics (the threshold sweep).


# ------------------------------------------------- figures and the report (rules/report.smk)
def figure_split(wildcards):
    """Split whose images Fig. 1, 3, 4 and 5a show (smaf.experiments.Experiments.figure_split)."""
    return EXP.figure_split(wildcards.dataset, wildcards.experiment)


def figure_label_dirs(wildcards):
    """Fig. 5a columns: title -> label folder (seeds of each evaluated classifier, then CRF,
    then SAM's masks and the SAM / SAM + CRF labels when `refine:` lists them)."""
    ds, run = wildcards.dataset, wildcards.experiment
    models = experiment_cfg(wildcards, "evaluation")["models"]
    crf = "smaf" if "smaf" in models else models[-1]
    refined = [k for k in ("sam", "sam_crf") if k in EXP.refinements()]
    titles = {"sam": "SAM", "sam_crf": "SAM + CRF"}
    masks = {"SAM masks": f"results/{ds}/sam_masks"} if refined else {}
    return {
        **{f"{m.upper()} seed": seeds_folder(ds, run, m) for m in models},
        f"{crf.upper()} seed + CRF": crf_folder(ds, run, crf),
        **masks,
        **{
            f"{crf.upper()} seed + {titles[k]}": refined_folder(ds, run, crf, k)
            for k in refined
        },
    }


def figure_pred_dirs(wildcards):
    """Fig. 5b columns: title -> DeepLab's val predictions (without / with its CRF)."""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    return {"DeepLab": f"{base}/pred_val", "DeepLab + CRF": f"{base}/pred_val_crf"}


def figure_label_inputs(wildcards):
    """Index and every label folder of Fig. 5a/5b."""
    return {
        "index": index_input(wildcards),
        "labels": list(figure_label_dirs(wildcards).values()),
        "preds": list(figure_pred_dirs(wildcards).values()),
    }


def figure_seed_inputs(wildcards):
    """Fig. 3: the index and the EPS and SMAF seeds of the figure split (their maps/ are read)."""
    ds, run = wildcards.dataset, wildcards.experiment
    return {
        "index": index_input(wildcards),
        "eps": seeds_folder(ds, run, EXP.base),  # the base's: EPS or CLIP
        "smaf": seeds_folder(ds, run, "smaf"),
    }


def curve_histories(wildcards):
    """Training histories of one experiment: EPS pretraining (none on the CLIP base),
    self-training, DeepLab."""
    pretrain = (
        [] if CLIP_BASE else [f"results/{wildcards.dataset}/pretrain/history.csv"]
    )
    return [
        *pretrain,
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
    """The model (DeepLab, or the EPS / SMAF classifier for CAMs), the images folder and the
    index (for index_rows: the rules after the dataset stage all wait for it)."""
    cfg = predict_cfg()
    run = f"results/{wildcards.dataset}/{wildcards.experiment}"
    if cfg.get("model", "deeplab") == "deeplab":
        model = f"{run}/deeplab/model.pt"
    else:
        model = classifier_path(wildcards.dataset, wildcards.experiment, cfg["model"])
        if is_auto(experiment_cfg(wildcards, "seeds")["thr"]):
            record = EXP.thr_auto_record(
                wildcards.dataset, wildcards.experiment, cfg["model"]
            )
            return {
                "model": model,
                "images": cfg["images"],
                "thr_auto": record,
                "index": index_input(wildcards),
            }
    return {"model": model, "images": cfg["images"], "index": index_input(wildcards)}


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


# ------------------------------------------ diagnostics (rules/diagnostics.smk: thr_sweep)
def thr_sweep_seed_dirs(wildcards):
    """model -> the train_aug seeds folder (its fused maps) of each swept model."""
    return {
        m: seeds_folder(wildcards.dataset, wildcards.experiment, m)
        for m in config["thr_sweep"]["models"]
    }


def thr_auto_input(section, target=None):
    """Input function: {"thr_auto": the held-out choice a job uses} when `section`.thr is auto
    (target: eps / smaf seeds, `teacher` = self_train.thr; None = the wildcards' model).
    """

    def get(wildcards):
        if not is_auto(experiment_cfg(wildcards, section)["thr"]):
            return {}
        name = target or wildcards.model
        return {
            "thr_auto": EXP.thr_auto_record(
                wildcards.dataset, wildcards.experiment, name
            )
        }

    return get


def thr_auto_maps(wildcards):
    """What the thr_auto sweep reads: the maps folder (offline teacher) or the classifier."""
    source = EXP.thr_auto_source(
        wildcards.dataset, wildcards.experiment, wildcards.target
    )
    if "maps_dir" in source:
        return {"maps": source["maps_dir"]}
    return {"model": source["model_path"]}


def thr_auto_settings(wildcards):
    """The CAM settings and amp of a computed thr_auto sweep (empty when it reads a folder)."""
    source = EXP.thr_auto_source(
        wildcards.dataset, wildcards.experiment, wildcards.target
    )
    return {k: v for k, v in source.items() if k in ("cam", "amp")}


def thr_sweep_gt(wildcards):
    """The held-out images' ground truth: SegmentationClassAug where the dataset has it (VOC:
    the only masks of train_aug minus train), else SegmentationClass."""
    if EXP.has_aug_masks(wildcards.dataset):
        return "SegmentationClassAug"
    return "SegmentationClass"
