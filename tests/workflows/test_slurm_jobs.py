"""SLURM bookkeeping without a cluster: submissions parsed from Snakemake's output,
the summary's cluster section, and the resources configuration (validated, layered)."""

from __future__ import annotations

import pytest
import yaml

from cryofac.config import ConfigError
from workflows import cli, slurm_jobs
from workflows.tables import format_tsv

OUTPUT = """\
Job 0a1b has been submitted with SLURM jobid 41 (log: /r/.snakemake/slurm_logs/group_preprocess_ctf_extract_motioncorr_pick/41.log).
Job 16 has been submitted with SLURM jobid 42 (log: /r/.snakemake/slurm_logs/rule_reconstruct/0000032/42.log).
some other line
"""


def test_submissions_recorded_once_with_rules_and_batch(tmp_path, monkeypatch):
    targets = {
        "41": "pick:batch=b00003 ctf:batch=b00003 extract:batch=b00003 motioncorr:batch=b00003"
    }
    monkeypatch.setattr(slurm_jobs, "job_targets", lambda jobid: targets.get(jobid, ""))
    recorded = slurm_jobs.record_submissions(tmp_path, OUTPUT.splitlines())
    again = slurm_jobs.record_submissions(tmp_path, OUTPUT.splitlines())  # no duplicates
    assert [s.slurm_jobid for s in recorded] == [s.slurm_jobid for s in again] == ["41", "42"]
    batch_job, recon = again
    assert batch_job.rule == "motioncorr,ctf,pick,extract" and batch_job.batch == "b00003"
    assert recon.rule == "reconstruct" and recon.batch == ""  # from the log path


def test_cluster_section_counts_states_and_lists_failures(tmp_path):
    rows = [
        {"slurm_jobid": "7", "batch": "b00000", "rule": "a", "state": "TIMEOUT", "node": "n1"},
        {"slurm_jobid": "8", "batch": "b00000", "rule": "a", "state": "COMPLETED", "node": "n2"},
        {"slurm_jobid": "9", "batch": "b00001", "rule": "a", "state": "RUNNING", "node": "n1"},
        {"slurm_jobid": "10", "batch": "b00002", "rule": "a", "state": "PENDING", "node": ""},
    ]
    for row in rows:
        row.update(reason="", time_limit="00:05:00")
    (tmp_path / slurm_jobs.TABLE).write_text(format_tsv(rows, slurm_jobs.COLUMNS))
    section = slurm_jobs.cluster_section(tmp_path)
    assert section["jobs"] == {"queued": 1, "running": 1, "done": 1, "failed": 1}
    assert section["batches"]["b00000"] == {"state": "COMPLETED", "node": "n2", "slurm_jobid": "8"}
    assert [(f["slurm_jobid"], f["state"]) for f in section["failures"]] == [("7", "TIMEOUT")]
    assert slurm_jobs.cluster_section(tmp_path / "none") is None


def test_profile_resources_layer_under_the_users_config(tmp_path):
    profile = cli.profile_dir("slurm")
    assert slurm_jobs.is_slurm_profile(profile)
    assert not slurm_jobs.is_slurm_profile(cli.profile_dir("local"))
    user = tmp_path / "site.yaml"
    user.write_text(yaml.safe_dump({"resources": {"motioncorr": {"account": "lab42"}}}))
    config = cli.load_config(user, profile_config=cli.profile_config(profile))
    motioncorr = config["resources"]["motioncorr"]
    assert (motioncorr["partition"], motioncorr["gpu"], motioncorr["account"]) == (
        "gpu",
        1,
        "lab42",
    )
    assert cli.load_config(None)["resources"]["motioncorr"]["gpu"] == 0  # local defaults


@pytest.mark.parametrize(
    ("step", "key"),
    [({"device": "tpu"}, "device"), ({"runtime_growth": 0.5}, "runtime_growth")],
)
def test_bad_resources_are_one_line_errors(tmp_path, step, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"resources": {"ctf": step}}))
    with pytest.raises(ConfigError, match=f"resources.ctf.{key}"):
        cli.load_config(bad)
