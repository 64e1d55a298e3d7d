"""Issue 18: every path in every STAR and .cs file of a run folder resolves from the run
folder (RELION runs there; cryoSPARC's paths are relative to its project directory),
and the readers take files of both layouts (paths from the run folder, and the older
one: stacks relative to the STAR file's folder).

:func:`check_run_folder_paths` walks a run folder with ``starfile`` and cryosparc-tools'
``Dataset``; the end-to-end test (test_end_to_end.py) runs it on a real workflow's run
folder, the tests here on hand-made folders of either layout and on a broken one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from pipeline.io.cs import read_cs, write_cs
from pipeline.io.particles import ParticleTable, make_optics, write_particles_star
from workflows.particles import gather, snapshot

#: a cell that names a file: optional ``N@`` then a path with a data-file suffix
_PATHLIKE = re.compile(r"^(?:(\d+)@)?(\S+\.(?:mrcs?|star|tiff?|eer|cs|png|npz|json|txt))$")


def _frames(path: Path) -> int:
    with mrcfile.open(path, header_only=True, permissive=True) as mrc:
        return max(1, int(mrc.header.nz))


def _check(run: Path, where: str, value: str, problems: list[str], seen: set[str], field: str):
    match = _PATHLIKE.match(value.strip())
    if not match:
        return
    seen.add(field)
    index, name = match.group(1), match.group(2)
    target = Path(name) if os.path.isabs(name) else run / name
    if not target.is_file():
        problems.append(f"{where} {field}: {value} does not resolve from the run folder")
    elif index is not None and not 1 <= int(index) <= _frames(target):
        problems.append(f"{where} {field}: {value} is beyond the stack's images")


def check_run_folder_paths(run: Path) -> dict:
    """Walk every ``*.star`` and ``*.cs`` under ``run`` (Snakemake's own folder aside);
    return what was checked, raise AssertionError listing every path that does not
    resolve from ``run`` (``N@stack`` indices checked against the stack's size) and
    every particle ``.cs`` without ``location/*`` fields."""
    import starfile
    from cryosparc.dataset import Dataset

    problems: list[str] = []
    seen: set[str] = set()
    files = {"star": 0, "cs": 0}
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run)
        if rel.parts[0] == ".snakemake" or not path.is_file():
            continue
        if path.suffix == ".star":
            files["star"] += 1
            for block in starfile.read(path, always_dict=True).values():
                if isinstance(block, pd.DataFrame):
                    for column in block.columns:
                        if not pd.api.types.is_numeric_dtype(block[column]):
                            for value in block[column].astype(str).unique():
                                _check(run, str(rel), value, problems, seen, column)
                else:
                    for key, value in dict(block).items():
                        _check(run, str(rel), str(value), problems, seen, key)
        elif path.suffix == ".cs":
            files["cs"] += 1
            data = Dataset.load(str(path))
            fields = data.fields()
            for field in (f for f in fields if f.endswith(("/path", "_path"))):
                values = [v.decode() if isinstance(v, bytes) else str(v) for v in data[field]]
                if field == "blob/path":
                    idx = np.asarray(data["blob/idx"]) + 1
                    values = [f"{i}@{v}" for i, v in zip(idx, values, strict=True)]
                for value in sorted(set(values)):
                    _check(run, str(rel), value, problems, seen, field)
            if "blob/path" in fields and "location/micrograph_path" not in fields:
                problems.append(f"{rel}: particles without location/* fields")
    assert not problems, "\n".join(problems)
    return {"files": files, "fields": sorted(seen)}


def _micrograph(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.zeros((64, 96), np.float32))
        mrc.voxel_size = 1.0


def _batch(run: Path, batch: str, n: int, layout: str) -> Path:
    """A batch's extract folder as `cryofac extract` writes it, in either layout."""
    out = run / "batches" / batch / "extract"
    mic = run / "batches" / batch / "motioncorr" / "mic.mrc"
    _micrograph(mic)
    stack = out / "Particles" / "mic.mrcs"
    stack.parent.mkdir(parents=True)
    with mrcfile.new(stack) as mrc:
        mrc.set_data(np.ones((n, 16, 16), np.float32))
    name = "Particles/mic.mrcs" if layout == "old" else stack.relative_to(run).as_posix()
    rows = pd.DataFrame(
        {
            "rlnImageName": [f"{k + 1:06d}@{name}" for k in range(n)],
            "rlnMicrographName": [mic.relative_to(run).as_posix()] * n,
            "rlnCoordinateX": [20.0 + k for k in range(n)],
            "rlnCoordinateY": [30.0] * n,
            "rlnOpticsGroup": [1] * n,
            "rlnDefocusU": [12000.0] * n,
            "rlnDefocusV": [11800.0] * n,
            "rlnDefocusAngle": [30.0] * n,
        }
    )
    table = ParticleTable(make_optics(1.0, 16), rows)
    write_particles_star(out / "particles.star", table)
    write_cs(out / "particles.cs", table, base_dir=run)
    return out / "particles.star"


def test_gathered_and_snapshot_paths_resolve_from_the_run_folder_whatever_the_batch_layout(
    tmp_path, monkeypatch
):
    run = tmp_path / "run"
    stars = [_batch(run, "b00000", 3, "old"), _batch(run, "b00001", 2, "new")]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # nothing may resolve from the working folder by luck
    # the old-layout batch file: its stack is relative to its own folder, not the run
    with pytest.raises(AssertionError, match="b00000/extract/particles.star rlnImageName"):
        check_run_folder_paths(run)
    (stars[0].parent / "particles.cs").unlink()

    assert gather(stars, run / "particles" / "particles.star", root=run) == 5
    snap = run / "reconstruct" / "p0000004" / "input_particles.star"
    assert snapshot(run / "particles" / "particles.star", 4, snap, root=run) == 4
    write_cs(snap.with_name("particles.cs"), _read(snap))
    stars[0].unlink()  # the old-layout batch file (checked above)
    report = check_run_folder_paths(run)
    assert {"rlnImageName", "rlnMicrographName", "blob/path", "location/micrograph_path"} <= set(
        report["fields"]
    )
    names = _read(snap).particles["rlnImageName"].tolist()
    assert names[0] == "000001@batches/b00000/extract/Particles/mic.mrcs"
    assert names[3] == "000001@batches/b00001/extract/Particles/mic.mrcs"
    cs = read_cs(snap.with_name("particles.cs"))  # blob/path and micrograph_path agree
    assert cs.particles["rlnMicrographName"][0] == "batches/b00000/motioncorr/mic.mrc"
    assert cs.particles["rlnImageName"].tolist() == names


def test_readers_take_both_layouts_from_any_working_folder(tmp_path, monkeypatch):
    from pipeline.reconstruction.particles import load_particles

    run = tmp_path / "run"
    old = _batch(run, "b00000", 3, "old")
    new = _batch(run, "b00001", 2, "new")
    monkeypatch.chdir(tmp_path)
    assert len(load_particles(old).table) == 3
    assert len(load_particles(new).table) == 2
    # a broken path is still an error naming the stack
    broken = _read(new)
    broken.particles["rlnImageName"] = "000001@batches/b00009/extract/Particles/gone.mrcs"
    write_particles_star(new, broken)
    with pytest.raises(Exception, match="gone.mrcs not found"):
        load_particles(new)


def test_refined_particles_cs_carries_locations_from_a_subfolder(tmp_path, monkeypatch):
    run = tmp_path / "run"
    star = _batch(run, "b00000", 3, "new")
    out = run / "reconstruct" / "p0000003"
    out.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # not the run folder: found from a folder above out
    write_cs(out / "particles.cs", _read(star), base_dir=out)
    from cryosparc.dataset import Dataset

    data = Dataset.load(str(out / "particles.cs"))
    assert "location/micrograph_path" in data.fields()
    assert tuple(data["location/micrograph_shape"][0]) == (64, 96)


def _read(path: Path) -> ParticleTable:
    from pipeline.io.particles import read_particles_star

    return read_particles_star(path)


@pytest.mark.parametrize("root", [None, "run"])
def test_extract_paths_relative_to_the_run_folder_or_to_out(tmp_path, monkeypatch, root):
    """`cryofac extract --paths-relative-to RUN` (what the workflow passes) against the
    default (paths relative to OUT): the option changes every path, and both read."""
    from click.testing import CliRunner

    from cryofac.cli import cli
    from pipeline.io.mrc import write_mrc
    from pipeline.picking.coords import write_coordinates
    from tests.pipeline.extraction.test_cli_extract import _ctf_star

    run = tmp_path / "run"
    mic = write_mrc(run / "motioncorr" / "mic.mrc", np.zeros((200, 200), np.float32), 1.0)
    write_coordinates(run / "pick" / "mic_autopick.star", np.array([[100.0, 100.0]]), [1.0])
    _ctf_star(run / "ctf.star", ["motioncorr/mic.mrc"])
    monkeypatch.chdir(run)  # as Snakemake runs the step
    args = ["extract", "--micrographs", "ctf.star", "--coords", "pick", "--out", "extract"]
    args += ["--box", "32"] + (["--paths-relative-to", "."] if root else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = _read(run / "extract" / "particles.star")
    name = table.particles["rlnImageName"][0]
    assert name == ("000001@extract/Particles/mic.mrcs" if root else "000001@Particles/mic.mrcs")
    assert table.particles["rlnMicrographName"][0] == "motioncorr/mic.mrc"
    cs = read_cs(run / "extract" / "particles.cs")
    assert cs.particles["rlnImageName"][0] == name
    assert cs.particles["rlnMicrographName"][0] == "motioncorr/mic.mrc"
    assert mic.exists()
    monkeypatch.chdir(tmp_path)  # either layout reads from elsewhere
    from pipeline.reconstruction.particles import load_particles

    assert len(load_particles(run / "extract" / "particles.star").table) == 1
