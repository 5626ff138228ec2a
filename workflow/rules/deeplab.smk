# Stage 6: DeepLab-v2 (ASPP, multi-scale inputs) trained on the CRF-refined pseudo labels of
# train_aug, then val predictions (MSC, with and without DeepLab's dense CRF), their scores,
# and the test predictions packed for the VOC evaluation server. Input functions (deeplab_*)
# live in common_stages.smk.


rule deeplab_train:
    input:
        unpack(deeplab_train_inputs),
    output:
        model="results/{dataset}/{experiment}/deeplab/model.pt",
        history="results/{dataset}/{experiment}/deeplab/history.csv",
    log:
        "logs/{dataset}/{experiment}/deeplab/train.log",
    benchmark:
        "benchmarks/{dataset}/{experiment}/deeplab/train.tsv"
    conda:
        "../../envs/smaf.yaml"
    threads: 2
    resources:
        gpu=TRAIN_GPUS,  # DDP processes (train.gpus)
    params:
        code=script_code("deeplab_train.py"),
        index_rows=rows_of(["train_aug"]),
        # smaf.settings.DeepLabSettings without `test` (inference's); init_checkpoint:
        # evaluation only, a trained DeepLab used instead of training.
        settings=stage_settings("deeplab"),
        # Checkpoints outside the outputs: a killed job's rerun resumes from them.
        state_dir="results/{dataset}/state/{experiment}/deeplab",
    script:
        "../scripts/deeplab_train.py"


rule deeplab_predict:
    input:
        unpack(deeplab_predict_inputs),
    output:
        **DEEPLAB_PRED.job_outputs("pred", logits=temp(directory(DEEPLAB_LOGITS))),
    log:
        DEEPLAB_PRED.per_job(
            "logs/{dataset}/{experiment}/deeplab/predict_{pred_split}.log"
        ),
    benchmark:
        DEEPLAB_PRED.per_job(
            "benchmarks/{dataset}/{experiment}/deeplab/predict_{pred_split}.tsv"
        )
    wildcard_constraints:
        pred_split="val|test",
    conda:
        "../../envs/smaf.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        code=script_code("deeplab_predict.py"),
        index_rows=rows_of(pred_split_roles, pred_split_index),
        flip=stage_settings("deeplab", "test.flip"),
        pred_dir=DEEPLAB_PRED.out,
        logits_dir=DEEPLAB_LOGITS,
        work_dir=DEEPLAB_PRED.work_dir,
    script:
        "../scripts/deeplab_predict.py"


if not ONE_JOB:

    rule deeplab_predict_gather:
        input:
            DEEPLAB_PRED.shards,
        output:
            pred=directory(DEEPLAB_PRED.out),
            # MSC logits at 1/8 resolution for the CRF rule; deleted once it has run.
            logits=temp(directory(DEEPLAB_LOGITS)),
        log:
            "logs/{dataset}/{experiment}/deeplab/predict_{pred_split}.gather.log",
        wildcard_constraints:
            pred_split="val|test",
        localrule: True
        conda:
            "../../envs/smaf.yaml"
        params:
            code=script_code("gather_predictions.py"),
            work_dirs=DEEPLAB_PRED.work_dirs,
        script:
            "../scripts/gather_predictions.py"


rule deeplab_crf:
    input:
        unpack(deeplab_crf_inputs),
    output:
        **DEEPLAB_CRF.job_outputs(),
    log:
        DEEPLAB_CRF.per_job("logs/{dataset}/{experiment}/deeplab/crf_{pred_split}.log"),
    benchmark:
        DEEPLAB_CRF.per_job(
            "benchmarks/{dataset}/{experiment}/deeplab/crf_{pred_split}.tsv"
        )
    wildcard_constraints:
        pred_split="val|test",
    conda:
        "../../envs/smaf.yaml"
    threads: 8
    params:
        code=script_code("deeplab_crf.py"),
        index_rows=rows_of(pred_split_roles, pred_split_index),
        crf=stage_settings("deeplab", "test.crf"),  # smaf.settings.DenseCRFConfig
        out_dir=DEEPLAB_CRF.out,
        work_dir=DEEPLAB_CRF.work_dir,
    script:
        "../scripts/deeplab_crf.py"


if not ONE_JOB:

    rule deeplab_crf_gather:
        input:
            DEEPLAB_CRF.shards,
        output:
            directory(DEEPLAB_CRF.out),
        log:
            "logs/{dataset}/{experiment}/deeplab/crf_{pred_split}.gather.log",
        wildcard_constraints:
            pred_split="val|test",
        localrule: True
        conda:
            "../../envs/smaf.yaml"
        params:
            code=script_code("gather_crf.py"),
            kind="deeplab_crf",
            work_dirs=DEEPLAB_CRF.work_dirs,
        script:
            "../scripts/gather_crf.py"


rule deeplab_evaluate:
    input:
        shards=eval_shards,
        index=index_input,
    output:
        csv="results/{dataset}/{experiment}/eval/{stage}_{split}_{gt}.csv",
        json="results/{dataset}/{experiment}/eval/{stage}_{split}_{gt}.json",
    log:
        "logs/{dataset}/{experiment}/eval/{stage}_{split}_{gt}.log",
    wildcard_constraints:
        stage="deeplab|deeplab_crf",
        split="val",
        gt="SegmentationClass|SegmentationClassAug",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("evaluate.py"),
        index_rows=rows_of(lambda wildcards: [wildcards.split]),
        gt="{gt}",
        pred=deeplab_eval_predictions,
        meta=deeplab_eval_meta,
    script:
        "../scripts/evaluate.py"


rule deeplab_submission:
    input:
        unpack(deeplab_submission_inputs),
    output:
        folder=directory("results/{dataset}/{experiment}/deeplab/submission"),
        tar="results/{dataset}/{experiment}/deeplab_submission.tar.gz",
    log:
        "logs/{dataset}/{experiment}/deeplab/submission.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("deeplab_submission.py"),
        index_rows=rows_of(["test"], "test_index.csv"),
    script:
        "../scripts/deeplab_submission.py"
