# SMAF: multi-scale attention fusion self-training for weakly supervised semantic segmentation.
#
#   snakemake --cores all --resources gpu=1                      # the CPU demo (synthetic data)
#   snakemake --cores all --resources gpu=1 --configfile config/voc2012.yaml
#
# Stages (each a rule whose outputs feed the next): dataset -> EPS pretraining -> SMAF
# self-training -> CAM seeds -> dense CRF -> DeepLab-ASPP -> evaluation.
import os

from snakemake.utils import min_version, validate

from smaf.config import check_config, load_schema

min_version("9.0")


# The demo defaults, found beside this file whatever the working directory; --configfile
# files given on the command line override them key by key.
configfile: os.path.join(workflow.basedir, "config.yaml")


# Every key is checked before any job runs: one message naming each unknown key (with the
# closest known one) or bad value; then Snakemake fills in the schema's defaults. Experiments are
# checked merged with the base config (common.smk).
SCHEMA = load_schema(
    os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
)
check_config(config, SCHEMA)
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/common_data.smk"
include: "workflow/rules/common_stages.smk"
include: "workflow/rules/common_outputs.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/coco.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/seeds.smk"
include: "workflow/rules/crf.smk"
include: "workflow/rules/sam.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/deeplab.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/diagnostics.smk"


rule all:
    default_target: True
    input:
        final_targets(),
