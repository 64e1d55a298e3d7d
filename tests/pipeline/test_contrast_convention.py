"""One contrast convention across the pipeline (RELION's): stacks on disk have protein white.

The simulator's arrays and the CTF model have protein dark (image = CTF ⊗ projection);
extraction inverts; the particle loader of reconstruction inverts back. A mismatch here
gives maps of inverted density that still have a plausible half-map FSC.
"""

from __future__ import annotations

import numpy as np

from pipeline.ctf_model import CTFParams, ctf_2d
from pipeline.extraction import extract_particles
from pipeline.io.mrc import read_mrc
from pipeline.reconstruction.particles import load_particles
from pipeline.simulate import simulate_particle_stack, write_particle_stack


def _blob_volume(box: int = 32) -> np.ndarray:
    z, y, x = np.indices((box, box, box)) - box // 2
    return np.exp(-(x**2 + y**2 + z**2) / (2 * 4.0**2)).astype(np.float32)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_written_stacks_are_protein_white_and_load_back_as_the_model(tmp_path):
    rng = np.random.default_rng(0)
    images, truth = simulate_particle_stack(_blob_volume(), 8, 3.0, snr=100.0, rng=rng)
    star = write_particle_stack(tmp_path, images, truth)
    on_disk, _ = read_mrc(star.parent / "particles.mrcs")
    loaded = load_particles(star).images
    for model_image, disk_image, loaded_image in zip(images, on_disk, loaded, strict=True):
        assert _corr(-model_image, disk_image) > 0.9  # protein white on disk
        assert _corr(model_image, loaded_image) > 0.9  # the model's sign in memory


def test_extraction_inverts_contrast_so_protein_is_white():
    box = 64
    projection = np.zeros((256, 256), np.float32)
    yy, xx = np.indices(projection.shape)
    projection += np.exp(-((xx - 128) ** 2 + (yy - 128) ** 2) / (2 * 5.0**2))
    params = CTFParams(15000.0, 15000.0, 0.0, 300.0, 2.7, 0.1)
    image = np.fft.irfft2(np.fft.rfft2(projection) * ctf_2d(projection.shape, 1.5, params))
    assert image[128, 128] < image.mean()  # the model: protein dark
    extracted = extract_particles(image.astype(np.float32), np.array([[128.0, 128.0]]), box, 1.5)
    particle = extracted.images[0]
    centre = particle[box // 2 - 3 : box // 2 + 4, box // 2 - 3 : box // 2 + 4].mean()
    assert centre > particle.mean()  # on disk: protein white
