# Check the data set: every pair exists and is readable, sizes and channels match, batch_size
# and crop_size fit, the validation and preview frames too. Nothing but the report is written.
# Only the data set keys (and the knobs validate checks against the frames) are in params, so
# editing epochs or an inference setting does not rerun it. The report is a target of `all`,
# not an input of train: editing the preview or validation frames reruns this check only, not
# a finished training (train.smk). cache and train check the data set themselves when they run.


rule validate:
    input:
        plan.dataset_files,
    output:
        report="results/{shot}/dataset_report.json",
    log:
        "logs/validate/{shot}.log",
    benchmark:
        "results/benchmarks/validate/{shot}.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=plan.validate_settings_json,
    shell:
        "python -m ccat_tf validate --settings-json {params.settings:q}"
        " --report {output.report:q} > {log:q} 2>&1"
