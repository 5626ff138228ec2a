# Training stages: EPS (or CAM) pretraining, the offline teacher's maps, SMAF self-training.
# Checkpoints go to results/<dataset>/state/..., outside the declared outputs, so a killed
# job's rerun resumes instead of starting over.


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        model="results/{dataset}/pretrain/model.pt",
        history="results/{dataset}/pretrain/history.csv",
    log:
        "logs/{dataset}/pretrain.log",
    # Between-workflow output cache (`--cache`, SNAKEMAKE_OUTPUT_CACHE): keyed by the
    # inputs, params (incl. the code hash) and rule, so another checkout reuses the model.
    # (Snakemake allows no benchmark: directive on a cached rule; the log has the timings.)
    cache: "omit-software"
    conda:
        "../../envs/smaf.yaml"
    threads: 8
    resources:
        gpu=TRAIN_GPUS,  # DDP processes (train.gpus)
    params:
        code=script_code("pretrain.py"),
        index_rows=rows_of(["train_aug"]),
        model=config["model"],
        # smaf.settings.PretrainSettings (init_checkpoint: a trained classifier used instead).
        settings=stage_settings("pretrain"),
        state_dir="results/{dataset}/state/pretrain",
    script:
        "../scripts/pretrain.py"


rule teacher_maps:
    input:
        unpack(teacher_maps_inputs),
    output:
        **TEACHER_MAPS.job_outputs(),
    log:
        TEACHER_MAPS.per_job("logs/{dataset}/{experiment}/teacher_maps.log"),
    benchmark:
        TEACHER_MAPS.per_job("benchmarks/{dataset}/{experiment}/teacher_maps.tsv")
    conda:
        "../../envs/smaf.yaml"
    # As many as the seeds rule: the same computation.
    threads: 4
    resources:
        gpu=1,
    params:
        code=script_code("teacher_maps.py"),
        index_rows=rows_of(["train_aug"]),
        # A classifier teacher's pass: the seed computation's settings
        # (smaf.settings.SeedsSettings) with the teacher's CAM; it follows seeds.amp (bf16 on
        # CUDA). None on the CLIP base.
        settings=teacher_settings,
        # The CLIP base (pretrain.method clip): its weights and the teacher's CLIP settings
        # (pretrain.clip at teacher_cam's scales and flip); None for a classifier teacher.
        weights=lambda wildcards: clip_weights(wildcards) if CLIP_BASE else None,
        clip=lambda wildcards: (
            EXP.clip_settings(wildcards.experiment, "teacher") if CLIP_BASE else None
        ),
        out_dir=TEACHER_MAPS.out,
        work_dir=TEACHER_MAPS.work_dir,
    script:
        "../scripts/teacher_maps.py"


# Only where the teacher's settings differ from the seeds' (else the EPS seeds are its maps).
if not ONE_JOB:

    rule teacher_maps_gather:
        input:
            TEACHER_MAPS.shards,
        output:
            directory(TEACHER_MAPS.out),
        log:
            "logs/{dataset}/{experiment}/teacher_maps.gather.log",
        localrule: True
        conda:
            "../../envs/smaf.yaml"
        params:
            code=script_code("gather_seeds.py"),
            work_dirs=TEACHER_MAPS.work_dirs,
        script:
            "../scripts/gather_seeds.py"


rule self_train:
    input:
        unpack(self_train_inputs),
    output:
        model="results/{dataset}/{experiment}/self_train/model.pt",
        history="results/{dataset}/{experiment}/self_train/history.csv",
    log:
        "logs/{dataset}/{experiment}/self_train.log",
    benchmark:
        "benchmarks/{dataset}/{experiment}/self_train.tsv"
    conda:
        "../../envs/smaf.yaml"
    threads: 8
    resources:
        gpu=TRAIN_GPUS,  # DDP processes (train.gpus)
    params:
        code=script_code("self_train.py"),
        index_rows=rows_of(["train_aug"]),
        settings=stage_settings("self_train"),  # smaf.settings.SelfTrainSettings
        # The CLIP base has no pretrained classifier: the student is built from `model:`.
        model=config["model"] if CLIP_BASE else None,
        state_dir="results/{dataset}/state/{experiment}/self_train",
    script:
        "../scripts/self_train.py"
