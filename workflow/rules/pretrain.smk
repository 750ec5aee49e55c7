# The shipped initial weights (initial_weights: deblur | upscale | human_matting), built from
# scratch: `snakemake --cores all pretrained`. Settings: workflow/pretrain.yaml, or the file named
# by the config's `pretrain_settings` (`--config pretrain_settings=my.yaml`; read by
# ccat_tf/workflow/config_checks.py). Every file is made by `ccat-tf pretrain`, i.e. the
# package's ccat_tf.pretrain.train.pretrain, on the tensorflow-datasets corpus in results/pretrain/.

# A relative path: from the working directory, else from the Snakefile's folder.
PRETRAIN = config_checks.load_pretrain_settings(
    config["pretrain_settings"], workflow.basedir, error=WorkflowError
)
# A studio corpus (pairs:) replaces the packaged one; both are folders the rule depends on.
PRETRAIN_SOURCE = PRETRAIN["pairs"] or PRETRAIN["corpus"]


localrules:
    pretrained,


rule pretrained:
    input:
        expand(
            "ccat_tf/weights/{task}_{size}.cat",
            task=PRETRAIN["tasks"],
            size=PRETRAIN["model_sizes"],
        ),


rule pretrain_corpus:
    output:
        corpus=directory(PRETRAIN["corpus"]),
    log:
        "logs/pretrain_corpus/corpus.log",
    benchmark:
        "results/benchmarks/pretrain_corpus/corpus.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    threads: 1
    shell:
        "python -m ccat_tf.pretrain.sources {output.corpus:q} > {log:q} 2>&1"


rule pretrain:
    input:
        source=PRETRAIN_SOURCE,
    output:
        weights="ccat_tf/weights/{task}_{size}.cat",
    log:
        "logs/pretrain/{task}_{size}.log",
    benchmark:
        "results/benchmarks/pretrain/{task}_{size}.tsv"
    wildcard_constraints:
        task="deblur|upscale|human_matting",
        size="small|medium|large",
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        source=config_checks.pretrain_source_args(PRETRAIN),
        data_dir=PRETRAIN["data_dir"],
        steps=lambda w: PRETRAIN["steps"][w.task][w.size],
        crop=PRETRAIN["crop_size"],
        batch=PRETRAIN["batch_size"],
        lr=PRETRAIN["learning_rate"],
        seed=PRETRAIN["seed"],
        dtype=PRETRAIN["weights_dtype"],
    shell:
        "export OMP_NUM_THREADS={threads} TF_NUM_INTRAOP_THREADS={threads};"
        " python -m ccat_tf pretrain {wildcards.task} --model-size {wildcards.size}"
        " {params.source} --data-dir {params.data_dir:q} --output {output.weights:q}"
        " --steps {params.steps} --crop-size {params.crop} --batch-size {params.batch}"
        " --learning-rate {params.lr} --seed {params.seed} --weights-dtype {params.dtype}"
        " --threads {threads} > {log:q} 2>&1"
