# Per-batch preprocessing: manifest -> motion correction -> CTF -> picking -> extraction.
# Each step rule runs one `cryofac` step on a whole batch through scripts/run_step.py,
# which records per-movie status, so a corrupt movie is marked failed while the
# rest of its batch goes on. GPU steps (resources gpu > 0) run with --device gpu.


rule batch_manifest:
    output:
        "batches/{batch}/movies.txt",
    params:
        movies=lambda wildcards: BATCHES[wildcards.batch],
    log:
        "logs/{batch}/manifest.log",
    localrule: True
    conda:
        "../envs/cryofac.yaml"
    script:
        "../scripts/write_manifest.py"


rule motioncorr:
    input:
        inputs="batches/{batch}/movies.txt",
        movies=batch_movies,
        # ancient: acquisition software may rewrite the same gain reference when it
        # resumes; that must not redo every batch (a new gain needs a new run folder)
        gain=ancient(GAIN) if GAIN else [],
    output:
        status="batches/{batch}/motioncorr/status.tsv",
        ok="batches/{batch}/motioncorr/ok.txt",
    params:
        command=step_command(
            "motioncorr",
            "--pixel-size",
            ACQ["pixel_size_A"],
            "--dose-per-frame",
            ACQ["dose_per_frame_e_A2"],
            "--voltage",
            ACQ["voltage_kV"],
            "--patches",
            "x".join(str(p) for p in PIPELINE["motioncorr"]["patches"]),
            "--bfactor",
            PIPELINE["motioncorr"]["bfactor_A2"],
            "--tolerance",
            PIPELINE["motioncorr"]["tolerance_px"],
            "--max-iterations",
            PIPELINE["motioncorr"]["max_iterations"],
            *(["--gain", GAIN] if GAIN else []),
        ),
        input_dir=lambda wildcards, input: os.path.dirname(input.movies[0]),
        products=".mrc",
        **step_version("motioncorr"),
    threads: step_resources("motioncorr")["threads"]
    resources:
        **job_resources("motioncorr"),
    log:
        "logs/{batch}/motioncorr.log",
    benchmark:
        "benchmarks/{batch}/motioncorr.tsv"
    conda:
        "../envs/cryofac.yaml"
    script:
        "../scripts/run_step.py"


rule ctf:
    input:
        inputs="batches/{batch}/motioncorr/ok.txt",
    output:
        status="batches/{batch}/ctf/status.tsv",
        ok="batches/{batch}/ctf/ok.txt",
        selected="batches/{batch}/ctf/micrographs_selected.star",
    params:
        command=step_command(
            "ctf",
            "--pixel-size",
            ACQ["pixel_size_A"],
            "--voltage",
            ACQ["voltage_kV"],
            "--cs",
            ACQ["cs_mm"],
            "--amplitude-contrast",
            ACQ["amplitude_contrast"],
            "--defocus-min",
            PIPELINE["ctf"]["defocus_min_A"],
            "--defocus-max",
            PIPELINE["ctf"]["defocus_max_A"],
            "--min-resolution",
            PIPELINE["ctf"]["resolution_min_A"],
            "--max-resolution",
            PIPELINE["ctf"]["resolution_max_A"],
        ),
        star="micrographs_ctf.star",
        column="rlnMicrographName",
        max_fit_resolution=PIPELINE["ctf"].get("max_fit_resolution_A"),
        **step_version("ctf"),
    threads: step_resources("ctf")["threads"]
    resources:
        **job_resources("ctf"),
    log:
        "logs/{batch}/ctf.log",
    benchmark:
        "benchmarks/{batch}/ctf.tsv"
    conda:
        "../envs/cryofac.yaml"
    script:
        "../scripts/run_step.py"


rule pick:
    input:
        inputs="batches/{batch}/ctf/ok.txt",
        ctf="batches/{batch}/ctf/micrographs_selected.star",
    output:
        status="batches/{batch}/pick/status.tsv",
        ok="batches/{batch}/pick/ok.txt",
    params:
        command=lambda wildcards, input: step_command(
            "pick",
            "--pixel-size",
            ACQ["pixel_size_A"],
            "--diameter",
            PIPELINE["picking"]["particle_diameter_A"],
            "--shape",
            PIPELINE["picking"].get("shape", "round"),
            "--ctf",
            input.ctf,
            "--voltage",
            ACQ["voltage_kV"],
            "--cs",
            ACQ["cs_mm"],
            "--amplitude-contrast",
            ACQ["amplitude_contrast"],
        ),
        products="_autopick.star",
        **step_version("pick"),
    threads: step_resources("pick")["threads"]
    resources:
        **job_resources("pick"),
    log:
        "logs/{batch}/pick.log",
    benchmark:
        "benchmarks/{batch}/pick.tsv"
    conda:
        "../envs/cryofac.yaml"
    script:
        "../scripts/run_step.py"


rule extract:
    input:
        inputs="batches/{batch}/pick/ok.txt",
        micrographs="batches/{batch}/ctf/micrographs_selected.star",
    output:
        status="batches/{batch}/extract/status.tsv",
        ok="batches/{batch}/extract/ok.txt",
    params:
        command=lambda wildcards, input: step_command(
            "extract",
            "--micrographs",
            input.micrographs,
            "--coords",
            os.path.dirname(input.inputs),
            "--box",
            PIPELINE["extraction"]["box_px"],
            "--pixel-size",
            ACQ["pixel_size_A"],
            "--diameter",
            PIPELINE["picking"]["particle_diameter_A"],
            "--voltage",
            ACQ["voltage_kV"],
            "--cs",
            ACQ["cs_mm"],
            "--amplitude-contrast",
            ACQ["amplitude_contrast"],
            *(["--bin", config["extract_bin"]] if config["extract_bin"] != 1 else []),
        ),
        single=True,
        **step_version("extract"),
    threads: step_resources("extract")["threads"]
    resources:
        **job_resources("extract"),
    log:
        "logs/{batch}/extract.log",
    benchmark:
        "benchmarks/{batch}/extract.tsv"
    conda:
        "../envs/cryofac.yaml"
    script:
        "../scripts/run_step.py"


rule batch_table:
    input:
        manifest="batches/{batch}/movies.txt",
        motioncorr="batches/{batch}/motioncorr/status.tsv",
        ctf="batches/{batch}/ctf/status.tsv",
        pick="batches/{batch}/pick/status.tsv",
        extract="batches/{batch}/extract/status.tsv",
    output:
        "batches/{batch}/movies.tsv",
    params:
        thumbnails="thumbnails",
        **step_version("batch_table"),
    log:
        "logs/{batch}/table.log",
    localrule: True
    conda:
        "../envs/cryofac.yaml"
    script:
        "../scripts/batch_table.py"
