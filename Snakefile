# SMAF: multi-scale attention fusion self-training for weakly supervised semantic segmentation.
#
#   snakemake --cores all --resources gpu=1                      # the CPU demo (synthetic data)
#   snakemake --cores all --resources gpu=1 --configfile config/voc2012.yaml
#
# Stages (each a rule whose outputs feed the next): dataset -> EPS pretraining -> SMAF
# self-training -> CAM seeds -> dense CRF -> DeepLab-ASPP -> evaluation.
import os

from snakemake.utils import min_version, validate

min_version("9.0")


# The demo defaults, found beside this file whatever the working directory; --configfile
# files given on the command line override them key by key.
configfile: os.path.join(workflow.basedir, "config.yaml")


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/seeds.smk"
include: "workflow/rules/crf.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/deeplab.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
