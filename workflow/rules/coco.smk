# MS-COCO 2014 (`source: coco`): the official zips, their safe extraction into the dataset's
# root, and the instance annotations converted to semantic masks in shards (smaf.data.coco).
# The dataset index (rule prepare_dataset) waits for the gathered masks of every COCO set the
# splits name: coco_dataset_inputs. With `download: false` nothing is fetched or extracted:
# `root` must hold train2014/, val2014/ and annotations/ already.
from smaf.data.sources import coco as coco_source

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


rule extract_coco:
    input:
        archive="resources/downloads/{archive}.zip",
    output:
        marker="resources/{dataset}/{archive}.zip.extracted",
    log:
        "logs/{dataset}/extract_{archive}.log",
    wildcard_constraints:
        dataset="|".join(re.escape(d) for d in COCO_DATASETS),
        archive="|".join(COCO_ARCHIVES),
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        dest=dataset_field("root"),
        strip_components=0,
    script:
        "../scripts/extract.py"


# One job per shard: block {k} of {n} of the set's images sorted by id. Resumable (a killed
# shard keeps the masks it wrote); the marker is written last.
rule coco_masks:
    input:
        annotations=coco_annotations_input,
    output:
        marker="resources/{dataset}/masks/{coco_set}/shard{k}of{n}.done",
    log:
        "logs/{dataset}/coco_masks/{coco_set}_shard{k}of{n}.log",
    benchmark:
        "benchmarks/{dataset}/coco_masks/{coco_set}_shard{k}of{n}.tsv"
    wildcard_constraints:
        dataset="|".join(re.escape(d) for d in COCO_DATASETS),
        coco_set=r"(train|val)\d{4}",
        k=r"[1-9]\d*",
        n=r"[1-9]\d*",
    conda:
        "../../envs/smaf.yaml"
    threads: 1
    resources:
        mem_mb=coco_masks_mem_mb,
    params:
        code=script_code("coco_masks.py"),
        annotations=coco_annotations,
        out_dir=coco_set_masks_dir,
        crowd=dataset_field("crowd", "class"),
    script:
        "../scripts/coco_masks.py"


rule coco_masks_gather:
    input:
        shards=coco_shard_markers,
    output:
        "resources/{dataset}/masks/{coco_set}.done",
    log:
        "logs/{dataset}/coco_masks/{coco_set}.log",
    wildcard_constraints:
        dataset="|".join(re.escape(d) for d in COCO_DATASETS),
        coco_set=r"(train|val)\d{4}",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("coco_masks_gather.py"),
        out_dir=coco_set_masks_dir,
    script:
        "../scripts/coco_masks_gather.py"
