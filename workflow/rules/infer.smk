# Apply each shot's model to its infer_frames, infer_chunk_size frames per job.
#
# A chunk's frames are a directory() output, results/{shot}/chunks/{first}-{last}/, so they are
# real file targets: Snakemake deletes the folder before the chunk (re)runs and removes it when
# the job fails or is killed, so it never holds stale or half-written frames. The chunk name
# says which frames it holds; ShotPlan.chunks_of (ccat_tf/workflow/shots.py) cuts the frame list the same way each
# time, and a different infer_frames or infer_chunk_size gives other names, hence other jobs.
# `infer` then gathers the chunks into ONE folder, results/{shot}/output/{shot}.####.<ext>, by
# hard links (no second copy on disk; a plain copy where links are not allowed). That folder is a directory()
# output too, so it is rebuilt whole whenever a chunk changes: no frame of an older frame range
# or older model survives in it.
#
# Only inference settings are in params.settings: editing them reruns this shot's chunks (and
# the gather) and nothing upstream; a new model.cat reruns them as an updated input.


rule infer_chunk:
    input:
        model="results/{shot}/model.cat",
        frames=plan.chunk_input_files,
    output:
        frames=directory("results/{shot}/chunks/{chunk}"),
    log:
        "logs/infer_chunk/{shot}/{chunk}.log",
    benchmark:
        "results/benchmarks/infer_chunk/{shot}/{chunk}.tsv"
    conda:
        "../../envs/ccat_tf-gpu.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        settings=plan.infer_settings_json,
        input_pattern=plan.input_pattern,
        frame_spec=plan.chunk_frame_spec,
        output_pattern=plan.chunk_output_pattern,
    shell:
        "export OMP_NUM_THREADS={threads} TF_NUM_INTRAOP_THREADS={threads};"
        " mkdir -p {output.frames:q};"
        " python -m ccat_tf infer {input.model:q} --input {params.input_pattern:q}"
        " --frames {params.frame_spec:q} --output {params.output_pattern:q}"
        " --settings-json {params.settings:q} > {log:q} 2>&1"


rule infer:
    input:
        chunks=plan.chunk_dirs,
    output:
        frames=directory("results/{shot}/output"),
    log:
        "logs/infer/{shot}.log",
    benchmark:
        "results/benchmarks/infer/{shot}.tsv"
    params:
        frame_count=plan.infer_frame_count,
    run:
        images.gather_frames(
            input.chunks,
            output.frames,
            params.frame_count,
            log[0],
            error=WorkflowError,
        )
