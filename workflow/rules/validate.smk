# Check the data set before anything is decoded or trained: every pair exists and is readable,
# sizes and channels match, batch_size and crop_size fit. Nothing but the report is written.
# Only the data set keys (and the knobs validate checks against the frames) are in params, so
# editing epochs or an inference setting does not rerun it.


rule validate:
    input:
        dataset_files,
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
        settings=dataset_settings_json,
    shell:
        "python -m ccat_tf validate --settings-json {params.settings:q}"
        " --report {output.report:q} > {log:q} 2>&1"
