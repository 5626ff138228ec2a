# The dataset stage: generate (synthetic) or locate (VOC) the images, then index and check them.


rule synthetic_dataset:
    output:
        directory("resources/{dataset}/VOC2012"),
    log:
        "logs/{dataset}/synthetic_dataset.log",
    benchmark:
        "benchmarks/{dataset}/synthetic_dataset.tsv"
    wildcard_constraints:
        dataset="|".join(
            re.escape(d)
            for d, v in config["datasets"].items()
            if v["source"] == "synthetic"
        ),
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("synthetic_dataset.py"),
        generator=synthetic_params,
    script:
        "../scripts/synthetic_dataset.py"


rule prepare_dataset:
    input:
        unpack(dataset_inputs),
    output:
        splits=expand("results/{{dataset}}/data/splits/{split}.txt", split=SPLIT_ROLES),
        labels="results/{dataset}/data/cls_labels.csv",
        info="results/{dataset}/data/dataset.json",
    log:
        "logs/{dataset}/prepare_dataset.log",
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("prepare_dataset.py"),
        root=dataset_root,
        splits=dataset_field("splits"),
        num_classes=dataset_field("num_classes"),
        label_source=dataset_field("label_source", "auto"),
        aug_mask_dir=aug_mask_dir,
        saliency_dir=dataset_saliency_dir,
    script:
        "../scripts/prepare_dataset.py"
