# Train (or resume, or start a new run: the training engine decides from the .ost) on the
# shot's cache. The Data Directory results/{shot}/train/ is NOT an output: it holds the resume
# state (progress.ost), the checkpoints, contact sheets and .summary files, and Snakemake deletes
# a job's outputs before running it. Only model.cat, a copy of the final checkpoint, is.
#
# What reruns it (ccat_tf/workflow/shots.py): params.model, the settings that decide the model
# (epochs, model_size, crop_size, data set, ...), so editing one of shot A's reruns A's training
# only; `ccat-tf train` on the same Data Directory continues from the .ost when the change is
# compatible (more epochs) and starts a new run when it is not (another model_size). The other
# settings (intervals, preview, validation frames, hooks, run name) come with params.settings,
# which Snakemake does not compare (it is computed with `input`): editing them after a shot
# finished reruns nothing, and model.cat and everything made from it stay as they are. For the
# same reason the validation and preview frames, and validate's report, are not inputs here
# (validate is a target of its own; `ccat-tf train` checks the data set itself when it starts).
# A killed job leaves model.cat incomplete, and the next `snakemake` call reruns it, which
# resumes. Exit 75 means "interrupted, progress saved" (SIGTERM, e.g. a farm's preemption):
# with --retries (profiles/slurm) the job is resubmitted and resumes.


rule train:
    input:
        cache="results/{shot}/dataset_cache.h5",
        extra=plan.train_extra_files,
    output:
        model="results/{shot}/model.cat",
    log:
        "logs/train/{shot}.log",
    benchmark:
        "results/benchmarks/train/{shot}.tsv"
    conda:
        "../../envs/ccat_tf-gpu.yaml"
    threads: 8
    resources:
        gpu=config["train_gpus"],
        mem_mb=16000,
        runtime=720,
    params:
        model=plan.model_settings_json,
        settings=plan.train_settings_json,
        data_directory=plan.train_directory,
    shell:
        "export OMP_NUM_THREADS={threads} TF_NUM_INTRAOP_THREADS={threads};"
        " python -m ccat_tf train --settings-json {params.settings:q}"
        " --data-directory {params.data_directory:q} --cache-file {input.cache:q}"
        " --output {output.model:q} > {log:q} 2>&1"
