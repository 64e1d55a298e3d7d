# Downstream: gather the particles of all finished batches, then reconstruct
# (2D, ab-initio, gold-standard refinement, FSC: `cryofac reconstruct`) at growing
# particle counts. reconstruct/p<N>/ always holds the first N gathered particles.


checkpoint gather_particles:
    input:
        expand("batches/{batch}/extract/status.tsv", batch=sorted(BATCHES)),
    output:
        counts="particles/count.json",
    params:
        star="particles/particles.star",
    log:
        "logs/gather_particles.log",
    localrule: True
    conda:
        "../envs/cryofac.yaml"
    script:
        "../scripts/gather_particles.py"


rule particle_snapshot:
    input:
        # ancient: a later gather (more particles) does not change the first N
        counts=ancient("particles/count.json"),
    output:
        "reconstruct/p{n}/input_particles.star",
    params:
        gathered="particles/particles.star",
    log:
        "logs/reconstruct/p{n}_snapshot.log",
    localrule: True
    conda:
        "../envs/cryofac.yaml"
    script:
        "../scripts/particle_snapshot.py"


rule reconstruct:
    input:
        "reconstruct/p{n}/input_particles.star",
    output:
        result="reconstruct/p{n}/result.json",
    params:
        command=step_command(
            "reconstruct", "--symmetry", PIPELINE["reconstruct"]["symmetry"]
        ),
        out=subpath(output.result, parent=True),
        device=lambda wildcards, resources: step_device("reconstruct", resources.gpu),
        **step_version("reconstruct"),
    threads: step_resources("reconstruct")["threads"]
    resources:
        **job_resources("reconstruct"),
    log:
        "logs/reconstruct/p{n}.log",
    conda:
        "../envs/cryofac.yaml"
    benchmark:
        "benchmarks/reconstruct/p{n}.tsv"
    shell:
        "{params.command:q} {input:q} --out {params.out:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"
