# The dataset stage: generate (synthetic) or locate (VOC) the images, then index and check them.
# Every later stage reads the index (results/<dataset>/data/index.csv + dataset.json) only.


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


# A checkpoint: sharded stages read how many images each split has (common_stages.smk shard_count).
checkpoint prepare_dataset:
    input:
        unpack(dataset_inputs),
    output:
        index="results/{dataset}/data/index.csv",
        info="results/{dataset}/data/dataset.json",
    log:
        "logs/{dataset}/prepare_dataset.log",
    conda:
        "../../envs/smaf.yaml"
    threads: 4
    params:
        code=script_code("prepare_dataset.py"),
        source=dataset_field("source"),
        settings=dataset_settings,
        fingerprint=dataset_fingerprint,
        roles=list(SPLIT_ROLES),
        # EPS needs a saliency map per training image: checked here, before any training.
        needs_saliency=eps_is_trained(),
    script:
        "../scripts/prepare_dataset.py"


# The test images (predicted for a submission, never trained on or scored): an index of their
# own, because they may arrive later than the rest (VOC2012test is behind a login).
checkpoint test_index:
    input:
        unpack(test_index_inputs),
    output:
        index="results/{dataset}/data/test_index.csv",
        info="results/{dataset}/data/test_index.json",
    log:
        "logs/{dataset}/test_index.log",
    conda:
        "../../envs/smaf.yaml"
    threads: 4
    params:
        code=script_code("prepare_dataset.py"),
        source=dataset_field("source"),
        settings=dataset_settings,
        fingerprint=dataset_fingerprint,
        roles=["test"],
    script:
        "../scripts/prepare_dataset.py"


# Saliency maps for EPS on a user's own data (`saliency: compute`): U²-Net (rembg's ONNX model)
# on every training image, written where the index says; the stats file marks the end.
rule saliency:
    input:
        index=index_input,
        model=config["saliency"]["model"],
    output:
        "results/{dataset}/data/saliency.json",
    log:
        "logs/{dataset}/saliency.log",
    conda:
        "../../envs/smaf.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        code=script_code("saliency.py"),
        index_rows=rows_of(["train_aug"]),
        size=config["saliency"]["size"],
    script:
        "../scripts/saliency.py"
