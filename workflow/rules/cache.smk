# Decode the data set once into an HDF5 frame cache (every pair, at each multi-resolution
# scale) that training reads crops from. Its inputs and params are only what decides the cached
# pixels, so it is rebuilt when the pairs or their channels change and not when the validation
# report is rewritten for crop_size, batch_size or validation_frames. It does not wait for
# validate (`ccat-tf cache` checks the data set itself and fails with the same message).
# (Depending on the report, even as ancient(), would rebuild it or, with ancient, make Snakemake
# miss a downstream job's params change in the same run: Snakemake 9 does not check the
# provenance of jobs downstream of one that reruns, and does not follow an ancient() edge.)


rule cache:
    input:
        pairs=plan.pair_files,
    output:
        cache="results/{shot}/dataset_cache.h5",
    log:
        "logs/cache/{shot}.log",
    benchmark:
        "results/benchmarks/cache/{shot}.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=plan.cache_settings_json,
    shell:
        "python -m ccat_tf cache --settings-json {params.settings:q}"
        " --output {output.cache:q} > {log:q} 2>&1"
