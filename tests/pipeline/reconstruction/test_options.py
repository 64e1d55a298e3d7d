"""Stage options: the number of 2D classes grows with the particles; every option is
recorded (JSON-serialisable) and the legacy keywords of run_reconstruction override them."""

import json

from pipeline.reconstruction.options import (
    AbinitioOptions,
    Class2DOptions,
    ReconstructOptions,
)
from pipeline.reconstruction.run import _options_from, stage_key


def test_classes_grow_with_particles_unless_given():
    auto = Class2DOptions()
    counts = [auto.classes_for(n) for n in (100, 600, 3000, 30_000, 1_000_000)]
    assert counts == sorted(counts) and counts[0] == 2 and counts[-1] == 200
    assert counts[2] == 10
    assert Class2DOptions(n_classes=4).classes_for(1_000_000) == 4


def test_abinitio_options_per_symmetry():
    ab = AbinitioOptions()
    assert ab.attempts_for(" o ") == 2 and ab.attempts_for("C1") == 1
    assert ab.symmetry_for("O") == "C4" and ab.symmetry_for("d2") == "D2"


def test_options_are_recorded_and_keys_follow_them():
    opts = _options_from(None, "O", 3, None, 12, 5, 9)
    data = json.loads(json.dumps(opts.to_dict()))
    assert data["symmetry"] == "O" and data["seed"] == 9
    assert data["class2d"]["n_classes"] == 3 and data["abinitio"]["iterations"] == 12
    assert data["refine"]["max_iterations"] == 5 and data["refine"]["march_fraction"] == 0.2
    base = ReconstructOptions()
    assert stage_key("x", base.to_dict()) == stage_key("x", ReconstructOptions().to_dict())
    assert stage_key("x", base.to_dict()) != stage_key("x", opts.to_dict())
    assert stage_key("x", base.to_dict()) != stage_key("y", base.to_dict())
