# MS-COCO 2014 (`source: coco`): the official zips, their safe extraction into the dataset's
# root, and the instance annotations converted to semantic masks in shards (smaf.data.coco_masks).
# The dataset index (rule prepare_dataset) waits for the gathered masks of every COCO set the
# splits name: coco_dataset_inputs. With `download: false` nothing is fetched or extracted:
# `root` must hold train2014/, val2014/ and annotations/ already.
# Input functions (coco_*) live in common_data.smk.


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
