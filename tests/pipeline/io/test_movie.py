import mrcfile
import numpy as np
import pytest
import tifffile

from pipeline.io.movie import Movie, MovieError
from pipeline.io.mrc import write_mrc


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    return rng.poisson(3.0, size=(4, 48, 64)).astype(np.float32)


def test_mrc_movie_is_memory_mapped_with_gain_and_pixel_size(tmp_path, frames):
    path = write_mrc(tmp_path / "m.mrcs", frames, 0.83, stack=True)
    gain = np.full((48, 64), 2.0, np.float32)
    write_mrc(tmp_path / "gain.mrc", gain, 0.83)
    with Movie(path, gain=tmp_path / "gain.mrc") as movie:
        assert (movie.n_frames, movie.shape) == (4, (48, 64))
        assert movie.pixel_size_A == pytest.approx(0.83, abs=1e-3)
        assert isinstance(movie._data, np.memmap)
        np.testing.assert_allclose(movie.frame(2), frames[2] * 2.0)
        np.testing.assert_allclose(movie.raw_frame(1), frames[1])


def test_tiff_movie_and_defects(tmp_path, frames):
    path = tmp_path / "m.tiff"
    tifffile.imwrite(path, frames.astype(np.uint8), photometric="minisblack")
    defects = np.zeros((48, 64), np.uint8)
    defects[10, 20] = 1
    frames_in = frames.astype(np.uint8)
    with Movie(path, defects=defects) as movie:
        assert len(movie) == 4 and movie.shape == (48, 64)
        f = movie.frame(3)
        good = np.ones((48, 64), bool)
        good[10, 20] = False
        assert f[10, 20] == pytest.approx(frames_in[3][good].mean(), rel=1e-5)
        np.testing.assert_array_equal(f[good], frames_in[3][good])
        assert len(list(movie)) == 4


def test_truncated_movie(tmp_path, frames):
    path = write_mrc(tmp_path / "m.mrcs", frames, 1.0, stack=True)
    data = path.read_bytes()
    (tmp_path / "cut.mrcs").write_bytes(data[: len(data) - 5000])
    with pytest.raises(MovieError, match="cut.mrcs: .*truncated"):
        Movie(tmp_path / "cut.mrcs")


def test_gain_of_wrong_shape(tmp_path, frames):
    path = write_mrc(tmp_path / "m.mrcs", frames, 1.0, stack=True)
    write_mrc(tmp_path / "gain.mrc", np.ones((64, 48), np.float32), 1.0)
    with pytest.raises(MovieError, match="gain reference .* has shape 48×64.*64×48"):
        Movie(path, gain=tmp_path / "gain.mrc")


def test_single_frame_movie(tmp_path, frames):
    path = write_mrc(tmp_path / "one.mrc", frames[0], 1.0)
    with pytest.raises(MovieError, match="1 frame"):
        Movie(path)


def test_unknown_and_missing(tmp_path):
    with pytest.raises(MovieError, match="file not found"):
        Movie(tmp_path / "nope.mrc")
    (tmp_path / "x.eer").write_bytes(b"\0" * 100)
    with pytest.raises(MovieError, match="EER"):
        Movie(tmp_path / "x.eer")
    (tmp_path / "x.tiff").write_bytes(b"garbage" * 20)
    with pytest.raises(MovieError, match="not a readable TIFF"):
        Movie(tmp_path / "x.tiff")


def test_complex_mrc_is_rejected(tmp_path):
    with mrcfile.new(tmp_path / "c.mrcs") as m:
        m.set_data(np.zeros((3, 8, 8), np.complex64))
    with pytest.raises(MovieError, match="complex"):
        Movie(tmp_path / "c.mrcs")
