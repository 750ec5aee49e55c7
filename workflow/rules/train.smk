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
#
# One network, several processes: the shot's train_tasks (default 1) training processes run the
# same command and train data-parallel; rank 0 alone writes the Data Directory. ccat_tf.launch
# starts them: in a SLURM job one srun step of train_tasks tasks (ranks from SLURM), otherwise
# that many local processes on loopback. The other rules are one process each, as ever.


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
    # CPU threads per training process (SLURM: --cpus-per-task of each task); locally the
    # shot's train_tasks processes share them.
    threads: 8
    resources:
        gpu=plan.train_gpus,
        # SLURM: one task per training process, on train_nodes machines; with several tasks
        # `mpi` makes the job's shell start them itself (ccat_tf.launch: one srun step).
        tasks=plan.train_tasks,
        nodes=plan.train_nodes,
        mpi=plan.train_mpi,
        tasks_per_gpu=0,
        mem_mb=16000,
        runtime=720,
    params:
        model=plan.model_settings_json,
        settings=plan.train_settings_json,
        data_directory=plan.train_directory,
    shell:
        "python -m ccat_tf.launch --tasks {resources.tasks} --nodes {resources.nodes}"
        " --threads {threads} --gpus {resources.gpu} --"
        " train --settings-json {params.settings:q}"
        " --data-directory {params.data_directory:q} --cache-file {input.cache:q}"
        " --output {output.model:q} > {log:q} 2>&1"
