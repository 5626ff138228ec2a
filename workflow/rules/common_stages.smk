# Input functions of the per-image stages and DeepLab: who computes which seeds / CRF
# (smaf.experiments), their shards, the evaluation records, DeepLab's inputs.


# ------------------------------------------ seeds, CRF and evaluation (seeds/crf/evaluate.smk)


def classifier_path(dataset, experiment, model):
    """Model file of classifier `model`: eps = EPS pretraining, smaf = SMAF self-training."""
    if model == "eps":
        return f"results/{dataset}/pretrain/model.pt"
    return f"results/{dataset}/{experiment}/self_train/model.pt"


def clip_weights(wildcards=None):
    """The CLIP base's weights file: pretrain.clip.weights, a `downloads:` item's name
    (resources/downloads/<name>, fetched by the download rule) or a path."""
    weights = config["pretrain"]["clip"]["weights"]
    if weights in config["downloads"]:
        return f"resources/downloads/{weights}"
    return weights


def clip_weights_input(wildcards):
    """What provides the CLIP weights (the download, a manual item's marker, or the file)."""
    return weights_input(clip_weights(wildcards))


def classifier_model(wildcards):
    """Trained classifier behind {model} (see classifier_path)."""
    return classifier_path(wildcards.dataset, wildcards.experiment, wildcards.model)


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


#: The default (`shards: {images_per_shard: 0}`): every per-image stage is one job that
#: publishes its output folder itself, with no gather job. Otherwise each stage is one job per
#: shard (wildcard {shard}) and a local gather rule publishes the shards as the folder.
ONE_JOB = not config["shards"]["images_per_shard"]


class PerImage:
    """The paths of a per-image stage (smaf.perimage.run_per_image), from its output folder.

    `out` is the output folder's pattern (results/{dataset}/{experiment}/...): the stage's
    out_dir. From it: `marker`, a shard job's temporary output (<out>.shards/{shard}.done), and
    `work_dir`, the job's staging folder in the state tree (results/{dataset}/state/
    {experiment}/.../{shard}, or .../all for ONE_JOB). `roles(wildcards)` gives the splits the
    folder covers and `index` the index they are counted in (a name, or a function of the
    wildcards); `shards` and `work_dirs` are the gather rule's input and params functions.
    """

    def __init__(self, out, roles, index="index.csv"):
        self.out = out
        state = out.replace("results/{dataset}/", "results/{dataset}/state/", 1)
        self.marker = f"{out}.shards/{{shard}}.done"
        self.work_dir = f"{state}/all" if ONE_JOB else f"{state}/{{shard}}"
        self.roles, self.index = roles, index

    def job_outputs(self, name="out", **more):
        """The stage job's outputs: the folder (`name`) and `more` for ONE_JOB, else the
        shard's temporary marker (the gather rule has the folders)."""
        if ONE_JOB:
            return {name: directory(self.out), **more}
        return {"marker": temp(touch(self.marker))}

    @staticmethod
    def per_job(path):
        """A log or benchmark path of the stage job: with .{shard} before the suffix when
        sharded."""
        stem, suffix = path.rsplit(".", 1)
        return path if ONE_JOB else f"{stem}.{{shard}}.{suffix}"

    def count(self, wildcards):
        index = self.index(wildcards) if callable(self.index) else self.index
        return shard_count(wildcards.dataset, self.roles(wildcards), index)

    def _every(self, pattern, wildcards):
        return shard_files(pattern, self.count(wildcards), **dict(wildcards.items()))

    def shards(self, wildcards):
        """Every shard job's marker (the gather rule's input)."""
        return self._every(self.marker, wildcards)

    def work_dirs(self, wildcards):
        """Every shard's staging folder (the gather rule's params)."""
        return self._every(self.work_dir, wildcards)


def seeds_roles(wildcards):
    """Splits a seeds folder covers: every split any run it serves needs."""
    return EXP.seeds_roles(wildcards.dataset, wildcards.experiment, wildcards.model)


def crf_roles(wildcards):
    """Splits a CRF folder covers: every split any run it serves needs."""
    return EXP.crf_roles(wildcards.dataset, wildcards.experiment, wildcards.model)


def crf_seeds(wildcards):
    """The seeds folder a CRF folder refines (EPS: possibly another run's)."""
    return seeds_folder(wildcards.dataset, wildcards.experiment, wildcards.model)


def pred_split_index(wildcards):
    """The index DeepLab's split {pred_split} is counted in: test images have their own."""
    return "test_index.csv" if wildcards.pred_split == "test" else "index.csv"


def pred_split_roles(wildcards):
    return [wildcards.pred_split]


# The per-image stages' paths, each written once (rules seeds, crf, teacher_maps,
# deeplab_predict, deeplab_crf and their gathers).
SEEDS = PerImage("results/{dataset}/{experiment}/seeds/{model}", seeds_roles)
CRF = PerImage("results/{dataset}/{experiment}/crf/{model}", crf_roles)
TEACHER_MAPS = PerImage(
    "results/{dataset}/{experiment}/teacher_maps", lambda wildcards: ["train_aug"]
)
DEEPLAB_PRED = PerImage(
    "results/{dataset}/{experiment}/deeplab/pred_{pred_split}",
    pred_split_roles,
    pred_split_index,
)
DEEPLAB_CRF = PerImage(
    "results/{dataset}/{experiment}/deeplab/pred_{pred_split}_crf",
    pred_split_roles,
    pred_split_index,
)


def sam_mask_roles(wildcards):
    """Splits the dataset's SAM masks cover: every split any SAM refinement needs."""
    return EXP.sam_mask_roles(wildcards.dataset)


def sam_roles(wildcards):
    """Splits a SAM-refined folder covers (shared like the seeds)."""
    return EXP.sam_roles(wildcards.dataset, wildcards.experiment, wildcards.model)


def sam_crf_roles(wildcards):
    """Splits a SAM-then-CRF folder covers (shared like the CRF)."""
    return EXP.sam_crf_roles(wildcards.dataset, wildcards.experiment, wildcards.model)


#: SAM's masks: one folder per dataset (they depend on the image alone), read by every run.
SAM_MASKS = PerImage("results/{dataset}/sam_masks", sam_mask_roles)
SAM = PerImage("results/{dataset}/{experiment}/sam/{model}", sam_roles)
SAM_CRF = PerImage("results/{dataset}/{experiment}/sam_crf/{model}", sam_crf_roles)
#: DeepLab's MSC logits of a split (written beside its predictions, read by its CRF).
DEEPLAB_LOGITS = "results/{dataset}/{experiment}/deeplab/logits_{pred_split}"


#: An evaluation record's name: <model>_<seed|crf>_<split>_<gt> or <deeplab|deeplab_crf>_val_<gt>.
RECORD = re.compile(
    r"^(?:(?P<model>eps|smaf|clip)_(?P<stage>seed|crf|sam|sam_crf)|(?P<deeplab>deeplab(?:_crf)?))_"
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
    return stage_folder(ds, run, m["model"], m["stage"])


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


def refined_folder(dataset, run, model, kind):
    """The folder holding run's `kind` refinement (crf, sam, sam_crf) of `model`'s seeds."""
    return f"results/{dataset}/{EXP.refined_owner(run, model, kind)}/{kind}/{model}"


def stage_folder(dataset, run, model, stage):
    """The label folder of evaluation stage `stage`: the seeds or one of their refinements."""
    if stage == "seed":
        return seeds_folder(dataset, run, model)
    return refined_folder(dataset, run, model, stage)


def eval_predictions(wildcards):
    """Label PNG folder scored by the evaluate rule: the seeds ({stage}=seed) or a refinement."""
    return stage_folder(
        wildcards.dataset, wildcards.experiment, wildcards.model, wildcards.stage
    )


def sam_checkpoint(wildcards=None):
    """The SAM checkpoint file: `sam.checkpoint`, a path or a `downloads:` item's name
    (resources/downloads/<name>, fetched by the download rule)."""
    ckpt = EXP.settings(None, "sam").checkpoint
    if not ckpt:
        raise ConfigError(
            "refine: or deeplab.pseudo_labels uses SAM but sam.checkpoint is not set: give a "
            "SAM checkpoint's path or a downloads: item (sam_vit_b_01ec64.pth)"
        )
    if ckpt in config["downloads"]:
        return f"resources/downloads/{ckpt}"
    return ckpt


def sam_checkpoint_input(wildcards):
    """What provides the SAM checkpoint (the download, a manual item's marker, or the file)."""
    return weights_input(sam_checkpoint(wildcards))


def sam_crf_settings(wildcards):
    """The CRF of SAM-refined labels (smaf.settings.CRFSettings, method labels)."""
    return EXP.sam_crf_settings(wildcards.experiment).params()


def sam_refine_seeds(wildcards):
    """The seeds folder a SAM-refined folder refines (EPS: possibly another run's)."""
    return seeds_folder(wildcards.dataset, wildcards.experiment, wildcards.model)


def sam_crf_input(wildcards):
    """The SAM-refined labels a SAM-then-CRF folder refines with the CRF."""
    return refined_folder(
        wildcards.dataset, wildcards.experiment, wildcards.model, "sam"
    )


def eval_meta(wildcards):
    """Fields the evaluate rule copies into its record (the columns of results/summary.csv);
    `thr`: the seeds' background score (Table 2 says how it was chosen; for `auto`, the
    record of the held-out choice as `thr_from`: the summary reads the value from it); `base`
    and `supervision`: what the number used beyond image labels (smaf.provenance)."""
    stage = f"{wildcards.model}_{wildcards.stage}"
    thr = experiment_cfg(wildcards, "seeds")["thr"]
    meta = {
        **run_meta(wildcards),
        "model": wildcards.model,
        "stage": stage,
        "split": wildcards.split,
        "thr": thr,
        **EXP.provenance(wildcards.experiment, wildcards.model, stage),
    }
    if is_auto(thr):
        meta["thr_from"] = EXP.thr_auto_record(
            wildcards.dataset, wildcards.experiment, wildcards.model
        )
    return meta


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
    """Every evaluation record of `{dataset}`, over all experiments and seeds."""
    return EXP.summary_records(wildcards.dataset)


def summary_configs(wildcards):
    """The config of each run of `{dataset}` (the `config` column of its summary)."""
    return {run: EXP.run_config(run, wildcards.dataset) for run in EXP.runs()}


def other_summaries():
    """The summaries of the other datasets run in this folder (results/<dataset>/summary.csv)."""
    return sorted(
        str(p)
        for p in Path("results").glob("*/summary.csv")
        if p.parent.name != DATASET
    )


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
            "index": index_input(wildcards),
            "checkpoint": weights_input(cfg["init_checkpoint"]),
        }
    inputs = {
        "index": index_input(wildcards),
        "labels": refined_folder(
            wildcards.dataset,
            wildcards.experiment,
            cfg["labels_from"],
            cfg.get("pseudo_labels", "crf"),
        ),
    }
    if cfg.get("pretrained"):
        inputs["weights"] = weights_input(cfg["pretrained"])
    if cfg.get("init_from"):
        inputs["init"] = classifier_path(
            wildcards.dataset, wildcards.experiment, cfg["init_from"]
        )
    return inputs


def split_index(wildcards):
    """Index of the split DeepLab predicts (`pred_split`): the test images' own index for
    test, the dataset index for val."""
    return index_input(
        wildcards, "test_index.csv" if wildcards.pred_split == "test" else "index.csv"
    )


def deeplab_predict_inputs(wildcards):
    """The trained DeepLab model and the split's index."""
    model = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab/model.pt"
    return {"model": model, "index": split_index(wildcards)}


def deeplab_crf_inputs(wildcards):
    """The split's MSC logits (from deeplab_predict) and the split's index."""
    logits = DEEPLAB_LOGITS.format(**dict(wildcards.items()))
    return {"logits": logits, "index": split_index(wildcards)}


def deeplab_eval_predictions(wildcards):
    """Predictions scored as stage `deeplab` (pred_<split>) or `deeplab_crf` (pred_<split>_crf)."""
    suffix = "_crf" if wildcards.stage == "deeplab_crf" else ""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    return f"{base}/pred_{wildcards.split}{suffix}"


def deeplab_eval_meta(wildcards):
    """Fields of a DeepLab evaluation record; `model` names the source of the pseudo labels,
    `init` the weights DeepLab started from (Table 1's init column), `base` and `supervision`
    what the number used beyond image labels (smaf.provenance)."""
    cfg = deeplab_cfg(wildcards)
    return {
        **run_meta(wildcards),
        "stage": wildcards.stage,
        "split": wildcards.split,
        "model": cfg["labels_from"],
        "init": deeplab_init(cfg),
        **EXP.provenance(wildcards.experiment, cfg["labels_from"], wildcards.stage),
    }


def deeplab_submission_inputs(wildcards):
    """Test predictions (CRF-refined unless deeplab.test.submission_crf is false)."""
    suffix = "_crf" if deeplab_cfg(wildcards)["test"]["submission_crf"] else ""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/deeplab"
    return {
        "pred": f"{base}/pred_test{suffix}",
        "index": index_input(wildcards, "test_index.csv"),
    }


def ablation_rows():
    """One entry per (table, row, run, stage) of `ablations:`, with its evaluation record."""
    return EXP.ablation_rows(DATASET)
