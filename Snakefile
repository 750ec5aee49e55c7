# ccat_tf: CopyCat's whole job as file targets.
#   snakemake --cores all                          every shot in config.yaml, and the overview
#   snakemake --cores all results/shotA/model.cat  train one shot
#   snakemake --profile profiles/slurm             the same on a SLURM farm
# What each rule runs: workflow/rules/*.smk; their Python: ccat_tf/workflow/. Settings and their
# defaults: workflow/schemas/config.schema.yaml.

from snakemake.utils import min_version, validate

min_version("8.0")


include: "workflow/rules/common.smk"


# Snakemake's own YAML loader has no limits: config.yaml and any --configfile are read first with
# ccat_tf's bounded one (1 MiB, 100 000 values with aliases expanded, no duplicate keys).
config_checks.check_config_files(
    "config.yaml", workflow.overwrite_configfiles, error=WorkflowError
)


configfile: "config.yaml"


# One-line errors naming the key (config: shots.shotA.epochs: ...), then the schema's defaults,
# then every frame the shots name must exist (config: shots.shotA.input: frame 3 (...) ...).
config_checks.check_config(
    config, config_checks.load_schema(workflow.basedir), error=WorkflowError
)
validate(config, "workflow/schemas/config.schema.yaml")
plan = ShotPlan(config, error=WorkflowError)
config_checks.check_inputs(plan, error=WorkflowError)

shell.prefix(shell_prefix(workflow.basedir, conda=uses_conda(workflow)))


wildcard_constraints:
    shot=plan.shot_pattern(),
    chunk=r"-?\d+--?\d+",


localrules:
    all,
    contact_sheet,
    preview,
    infer,


rule all:
    default_target: True
    input:
        plan.all_targets,


include: "workflow/rules/validate.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/pretrain.smk"
