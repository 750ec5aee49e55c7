# What a compositor looks at: loss.csv and graph.png per shot (all runs of its Data Directory),
# the latest contact sheet and preview copied beside them, a strip of output frames, the output's
# flicker against the input's, and one overview of every shot. The images are marked for
# `snakemake --report report.html`.


rule summary_csv:
    input:
        model="results/{shot}/model.cat",
    output:
        csv="results/{shot}/loss.csv",
    log:
        "logs/summary_csv/{shot}.log",
    benchmark:
        "results/benchmarks/summary_csv/{shot}.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        data_directory=plan.train_directory,
    shell:
        "python -m ccat_tf summary-csv {params.data_directory:q}"
        " --output {output.csv:q} > {log:q} 2>&1"


rule graph:
    input:
        csv="results/{shot}/loss.csv",
    output:
        png=report(
            "results/{shot}/graph.png",
            caption="../report/graph.rst",
            category="Shots",
            subcategory="{shot}",
            labels={"shot": "{shot}", "figure": "loss graph"},
        ),
    log:
        "logs/graph/{shot}.log",
    benchmark:
        "results/benchmarks/graph/{shot}.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "python -m ccat_tf graph {input.csv:q} --output {output.png:q} > {log:q} 2>&1"


# The Data Directory is not an output (see train.smk), so these copy its newest images (the
# latest run's highest step: ccat_tf.contact_sheet.newest_image, as `ccat-tf overview` shows) to
# fixed names the report and the user can point at. A command, not a `run:` block: it needs
# numpy, which the environment running Snakemake may lack.
rule contact_sheet:
    input:
        model="results/{shot}/model.cat",
    output:
        png=report(
            "results/{shot}/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="Shots",
            subcategory="{shot}",
            labels={"shot": "{shot}", "figure": "latest contact sheet"},
        ),
    log:
        "logs/contact_sheet/{shot}.log",
    benchmark:
        "results/benchmarks/contact_sheet/{shot}.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    params:
        data_directory=plan.train_directory,
    shell:
        "python -m ccat_tf.workflow.images {params.data_directory:q} contact"
        " {output.png:q} > {log:q} 2>&1"


rule preview:
    input:
        model="results/{shot}/model.cat",
    output:
        png=report(
            "results/{shot}/preview.png",
            caption="../report/preview.rst",
            category="Shots",
            subcategory="{shot}",
            labels={"shot": "{shot}", "figure": "latest preview"},
        ),
    log:
        "logs/preview/{shot}.log",
    benchmark:
        "results/benchmarks/preview/{shot}.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    params:
        data_directory=plan.train_directory,
    shell:
        "python -m ccat_tf.workflow.images {params.data_directory:q} preview"
        " {output.png:q} > {log:q} 2>&1"


rule output_samples:
    input:
        frames="results/{shot}/output",
        plates=plan.sample_plate_files,
    output:
        png=report(
            "results/{shot}/output_samples.png",
            caption="../report/output_samples.rst",
            category="Shots",
            subcategory="{shot}",
            labels={"shot": "{shot}", "figure": "output frames"},
        ),
    log:
        "logs/output_samples/{shot}.log",
    benchmark:
        "results/benchmarks/output_samples/{shot}.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        command=plan.samples_command,
    shell:
        "{params.command} > {log:q} 2>&1"


# Flicker: the output's frame-to-frame change that the input's motion does not explain, frame by
# frame, against the input's own (ccat-tf stability; at most 48 frames of a long shot, in 3
# evenly spread runs). Only for shots rendering 2 frames or more (ShotPlan.shot_targets).
rule stability:
    input:
        frames="results/{shot}/output",
        plates=plan.stability_plate_files,
    output:
        png=report(
            "results/{shot}/stability.png",
            caption="../report/stability.rst",
            category="Shots",
            subcategory="{shot}",
            labels={"shot": "{shot}", "figure": "stability (flicker)"},
        ),
    log:
        "logs/stability/{shot}.log",
    benchmark:
        "results/benchmarks/stability/{shot}.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        command=plan.stability_command,
    shell:
        "{params.command} > {log:q} 2>&1"


rule overview:
    input:
        models=plan.all_models,
    output:
        png=report(
            "results/overview.png",
            caption="../report/overview.rst",
            category="Overview",
            labels={"figure": "all shots"},
        ),
    log:
        "logs/overview/overview.log",
    benchmark:
        "results/benchmarks/overview/overview.tsv"
    conda:
        "../../envs/ccat_tf-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        data_directories=plan.all_train_directories,
        labels=plan.shots_of,
    shell:
        "python -m ccat_tf overview {params.data_directories:q}"
        " --labels {params.labels:q} --output {output.png:q} > {log:q} 2>&1"
