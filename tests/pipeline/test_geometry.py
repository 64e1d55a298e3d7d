import numpy as np

from pipeline.geometry import euler_to_matrix, matrix_to_euler, random_rotations


def test_euler_matrix_matches_relion_composition():
    # RELION: A = Rz(psi) @ Ry(tilt) @ Rz(rot) with R(angle) rotating the frame (transposed active).
    def rz(a):
        c, s = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
        return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])

    def ry(a):
        c, s = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
        return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])

    for rot, tilt, psi in [(10, 20, 30), (-170, 95, 44), (0, 180, 12), (33, 0, -5)]:
        expected = rz(psi) @ ry(tilt) @ rz(rot)
        assert np.allclose(euler_to_matrix(rot, tilt, psi), expected)


def test_round_trip_and_orthonormal():
    rng = np.random.default_rng(0)
    mats = random_rotations(500, rng)
    assert np.allclose(mats @ np.swapaxes(mats, -1, -2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(mats), 1.0)
    rot, tilt, psi = matrix_to_euler(mats)
    assert np.all((tilt >= 0) & (tilt <= 180))
    assert np.allclose(euler_to_matrix(rot, tilt, psi), mats, atol=1e-9)
    # Gimbal lock: tilt 0 keeps the total in-plane rotation.
    locked = euler_to_matrix(25.0, 0.0, 15.0)
    assert np.allclose(euler_to_matrix(*matrix_to_euler(locked)), locked)


def test_random_rotations_are_uniform():
    rng = np.random.default_rng(1)
    z = random_rotations(20000, rng)[:, 2, :]  # image of the z axis: uniform on the sphere
    assert abs(z[:, 2].mean()) < 0.02 and abs(np.mean(z[:, 2] ** 2) - 1 / 3) < 0.01
