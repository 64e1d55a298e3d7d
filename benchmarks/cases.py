"""Simulated cases that a benchmark measures and a bar test checks: one table, two readers.

Plain data (no imports), so tests may read it without depending on a benchmark script.
"""

#: CTF estimation (issue 3): (mean defocus Å, astigmatism U−V Å, angle of U °) of the eight
#: 1024² apoferritin micrographs of benchmarks/bench_motion_ctf.py (seeds 100 + index) and
#: tests/pipeline/ctf_estimate/test_fit.py; spans 0.6–3.5 µm.
CTF_CASES = [
    (6000.0, 300.0, 20.0),
    (9500.0, 800.0, -65.0),
    (13000.0, 1200.0, 40.0),
    (16500.0, 150.0, 85.0),
    (20000.0, 600.0, -20.0),
    (24000.0, 1500.0, 5.0),
    (28500.0, 900.0, 60.0),
    (35000.0, 700.0, -40.0),
]
