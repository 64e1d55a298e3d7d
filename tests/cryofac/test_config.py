import subprocess
import sys

import pytest
import yaml

from cryofac import config as cfg
from cryofac.errors import ConfigError


def test_default_facility_is_valid_and_complete():
    facility = cfg.load_facility()
    kinds = {i["kind"] for i in facility["instruments"]}
    assert kinds == {"microscope", "vitrification_robot", "glow_discharger"}
    voltages = sorted(i["voltage_kV"] for i in facility["instruments"] if i["kind"] == "microscope")
    assert voltages == [200, 300]
    rooms_with_microscopes = {
        i["room"] for i in facility["instruments"] if i["kind"] == "microscope"
    }
    assert len(rooms_with_microscopes) == 2
    for room in rooms_with_microscopes:
        quantities = {q for s in facility["sensors"] if s["room"] == room for q in s["quantities"]}
        assert {"temperature", "humidity", "magnetic_field_ac", "vibration"} <= quantities


def test_default_pipeline_is_valid():
    assert cfg.load_pipeline()["acquisition"]["voltage_kV"] == 300


def _write(tmp_path, data, name="facility.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_names_file_key_and_problem(tmp_path):
    data = cfg.load_facility()
    data["instruments"][1]["bookng"] = {}
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        cfg.load_facility(path)
    message = str(err.value)
    assert str(path) in message and "instruments[1].bookng" in message and "unknown key" in message


def test_negative_value_and_bad_reference(tmp_path):
    data = cfg.load_facility()
    data["instruments"][0]["pixel_size_A"] = -0.8
    with pytest.raises(
        ConfigError, match=r"instruments\[0\]\.pixel_size_A: -0.8 must be greater than 0"
    ):
        cfg.load_facility(_write(tmp_path, data))
    data = cfg.load_facility()
    data["sensors"][2]["room"] = "attic"
    with pytest.raises(ConfigError, match=r"sensors\[2\]\.room: unknown room 'attic'"):
        cfg.load_facility(_write(tmp_path, data))


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("acquisition:\n  pixel_size_A: [1.0\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        cfg.load_pipeline(path)


def test_pipeline_overrides_are_validated():
    merged = cfg.load_pipeline(overrides={"acquisition": {"pixel_size_A": 1.5}})
    assert merged["acquisition"]["pixel_size_A"] == 1.5
    assert merged["acquisition"]["voltage_kV"] == 300
    with pytest.raises(ConfigError, match="acquisition.pixel_size_A"):
        cfg.load_pipeline(overrides={"acquisition": {"pixel_size_A": 0}})


def test_config_check_cli_bad_file_is_one_line(tmp_path):
    data = cfg.load_facility()
    data["surprise"] = 1
    path = _write(tmp_path, data)
    proc = subprocess.run(
        [sys.executable, "-m", "cryofac.cli", "config", "check", "--facility", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown key 'surprise'" in proc.stderr and "Traceback" not in proc.stderr


def test_config_check_validates_limits_too(tmp_path):
    bad = tmp_path / "limits.yaml"
    bad.write_text("rooms: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cryofac.cli", "config", "check", "--limits", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert str(bad) in proc.stderr and "Traceback" not in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "cryofac.cli", "config", "check"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "limits: OK" in ok.stdout


def test_config_check_from_an_empty_folder(tmp_path):
    """As a newcomer runs it after ``pip install``: from a folder that is not the checkout,
    so the YAML and schemas come from the installed package (in CI: the wheel, which
    ``.ci/run`` installs without ``-e``; there the import must not find this checkout)."""
    import os
    from pathlib import Path

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    proc = run("-m", "cryofac.cli", "config", "check")
    assert proc.returncode == 0, proc.stderr
    for name in ("facility", "pipeline", "limits"):
        assert f"{name}: OK" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # a check writes nothing
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        where = Path(run("-c", "import cryofac; print(cryofac.__file__)").stdout.strip())
        checkout = Path(__file__).resolve().parents[2]
        # the CI venv may live inside the checkout (.venv-ci), so compare with the
        # checkout's own source file, and ask for an installed copy
        assert where.resolve() != (checkout / "cryofac" / "__init__.py").resolve(), (
            f"{where} is the checkout's, not the wheel's"
        )
        assert "site-packages" in where.parts, f"{where} is not an installed package"
