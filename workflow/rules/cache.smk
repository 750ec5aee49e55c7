# Decode the data set once into an HDF5 frame cache (every pair, at each multi-resolution
# scale) that training reads crops from. Its params are only what decides the cached pixels.


rule cache:
    input:
        report="results/{shot}/dataset_report.json",
        pairs=pair_files,
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
        settings=cache_settings_json,
    shell:
        "python -m ccat_tf cache --settings-json {params.settings:q}"
        " --output {output.cache:q} > {log:q} 2>&1"
