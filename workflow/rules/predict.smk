# Segment new images: a trained model over the folder `predict.images` (any depth), into
# results/<dataset>/<experiment>/predict/<predict.name>/ (masks/, overlay/, cams/,
# classes.json, areas.csv), the same library function as `smaf predict`
# (smaf.predict.folder.predict_folder). `snakemake predictions` builds it for every listed experiment.
# Input functions (predict_*) live in common_outputs.smk.


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
        index_rows=rows_of(["train_aug"]),
        settings=predict_settings,
        images=predict_images_fingerprint,
        work_dir="results/{dataset}/state/{experiment}/predict/{name}",
    script:
        "../scripts/predict.py"


rule predictions:
    input:
        predict_targets,
    localrule: True
