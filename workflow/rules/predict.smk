# Segment new images: a trained model over the folder `predict.images` (any depth), into
# results/<dataset>/<experiment>/predict/<predict.name>/ (masks/, overlay/, cams/,
# classes.json, areas.csv), the same library function as `smaf predict`
# (smaf.predict.folder.predict_folder). `snakemake predictions` builds it for every listed experiment.
from smaf.predict.images import folder_fingerprint


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


rule predict:
    input:
        unpack(predict_inputs),
    output:
        directory("results/{dataset}/{experiment}/predict/{name}"),
    log:
        "logs/{dataset}/{experiment}/predict/{name}.log",
    benchmark:
        "benchmarks/{dataset}/{experiment}/predict/{name}.tsv"
    wildcard_constraints:
        name="[^/]+",
    conda:
        "../../envs/smaf.yaml"
    # DeepLab's CRF runs on the CPU beside the network.
    threads: 4
    resources:
        gpu=1,
    params:
        code=script_code("predict.py"),
        settings=predict_settings,
        images=predict_images_fingerprint,
        work_dir="results/{dataset}/state/{experiment}/predict/{name}",
    script:
        "../scripts/predict.py"


rule predictions:
    input:
        predict_targets,
    localrule: True
