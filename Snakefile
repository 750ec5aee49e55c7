# ccat_tf: CopyCat's whole job as file targets.
#   snakemake --cores all                          every shot in config.yaml, and the overview
#   snakemake --cores all results/shotA/model.cat  train one shot
#   snakemake --profile profiles/slurm             the same on a SLURM farm
# What each rule runs: workflow/rules/*.smk. Settings and their defaults:
# workflow/schemas/config.schema.yaml.

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


# One-line errors naming the key (config: shots.shotA.epochs: ...), then the schema's defaults.
check_config(config)
validate(config, "workflow/schemas/config.schema.yaml")

shell.prefix(shell_prefix())


wildcard_constraints:
    shot="|".join(re.escape(s) for s in shots()),
    chunk=r"-?\d+--?\d+",


localrules:
    all,
    contact_sheet,
    preview,
    infer,


rule all:
    default_target: True
    input:
        all_targets,


include: "workflow/rules/validate.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/pretrain.smk"
