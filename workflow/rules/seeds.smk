# CAM seeds: multi-scale fused attention of a trained classifier (EPS or SMAF), argmax with a
# constant background score. Input functions (classifier_model, experiment_field) live in
# common.smk.


rule seeds:
    input:
        model=classifier_model,
        index="results/{dataset}/data/index.csv",
    output:
        directory("results/{dataset}/{experiment}/seeds/{model}_{split}"),
    log:
        "logs/{dataset}/{experiment}/seeds/{model}_{split}.log",
    benchmark:
        "benchmarks/{dataset}/{experiment}/seeds/{model}_{split}.tsv"
    wildcard_constraints:
        model="eps|smaf",
    conda:
        "../../envs/smaf.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        code=script_code("seeds.py"),
        scales=experiment_field("seeds", "scales"),
        flip=experiment_field("seeds", "flip"),
        resize_mode=experiment_field("seeds", "resize_mode"),
        eps=experiment_field("seeds", "eps"),
        thr=experiment_field("seeds", "thr"),
        amp=experiment_field("seeds", "amp"),
        # Per-image results survive a failed or killed job here (Snakemake deletes the
        # directory output itself); published onto the output when every image is done.
        work_dir="results/{dataset}/state/{experiment}/seeds/{model}_{split}",
    script:
        "../scripts/seeds.py"
