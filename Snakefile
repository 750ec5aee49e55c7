# ccat_tf: CopyCat's whole job as file targets.
#   snakemake --cores all                          every shot in config.yaml, and the overview
#   snakemake --cores all results/shotA/model.cat  train one shot
#   snakemake --profile profiles/slurm             the same on a SLURM farm
# What each rule runs: workflow/rules/*.smk. Settings and their defaults:
# workflow/schemas/config.schema.yaml.

from snakemake.utils import min_version, validate

min_version("8.0")


include: "workflow/rules/common.smk"


# Snakemake's own YAML loader has no limits: config.yaml and any --configfile are read first with
# ccat_tf's bounded one (1 MiB, 100 000 values with aliases expanded, no duplicate keys).
check_config_files("config.yaml")


configfile: "config.yaml"


# One-line errors naming the key (config: shots.shotA.epochs: ...), then the schema's defaults,
# then every frame the shots name must exist (config: shots.shotA.input: frame 3 (...) ...).
check_config(config)
validate(config, "workflow/schemas/config.schema.yaml")
check_inputs()

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
