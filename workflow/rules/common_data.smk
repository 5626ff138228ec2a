# Input functions of the dataset stage: each source's settings and inputs, downloads, manual
# items, the fingerprint of a user's own dataset; MS-COCO 2014's conversion (rules/coco.smk).


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


def index_input(wildcards, name="index.csv"):
    """The dataset index `name` (or test_index.csv) as a job's input: `ancient`, so that
    rewriting the index reruns nothing by itself. Each job that reads it says which rows it
    reads with an `index_rows` params entry (rows_of), and only a change in those rows reruns
    it: adding a val image reruns evaluation, not training (smaf.data.index.rows_fingerprint).
    """
    return ancient(data_path(wildcards, name))


def dataset_index(dataset):
    """index_input of the configured dataset, for rules without a {dataset} wildcard."""
    return ancient(f"results/{dataset}/data/index.csv")


def index_checkpoint(dataset, name="index.csv"):
    """The finished dataset stage that wrote index `name` of `dataset` (waits for it)."""
    stage = (
        checkpoints.test_index
        if name == "test_index.csv"
        else checkpoints.prepare_dataset
    )
    return stage.get(dataset=dataset)


def rows_of(roles, name="index.csv", dataset=None):
    """An `index_rows` params function: the fingerprint of the rows of `roles` (a list, or a
    function of the wildcards; ALL_ROLES: every row) of index `name` (or a function of the
    wildcards giving it) of `dataset` (default: the {dataset} wildcard's).

    It waits for the dataset stage (a checkpoint), so Snakemake weighs it once the index is
    final. Every job after the dataset stage has one (the summaries and the report too); a
    job without it would keep what Snakemake's first pass (before the checkpoint is known)
    thought of its inputs' jobs, and a finished run would plan it again.
    """

    def get(wildcards):
        index = name(wildcards) if callable(name) else name
        path = index_checkpoint(dataset or wildcards.dataset, index).output.index
        return rows_fingerprint(path, roles(wildcards) if callable(roles) else roles)

    return get


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
