import numpy as np
import pytest
from PIL import Image

from calipers.data import load_arrays, load_dataset, load_digits, load_images, load_table
from calipers.data.dataset import make_dataset
from calipers.exceptions import DataError


def test_digits_are_scikit_learns_real_digits():
    from sklearn.datasets import load_digits as sk

    d = load_digits()
    ref = sk()
    assert d.X.shape == (1797, 1, 8, 8) and d.n_outputs == 10
    np.testing.assert_allclose(d.X[5, 0] * 16, ref.images[5])
    np.testing.assert_array_equal(d.y, ref.target)
    assert d.input_shape == (1, 8, 8)


def test_arrays_round_trip(tmp_path, blobs):
    X, y = blobs
    np.savez(tmp_path / "d.npz", X=X, y=y + 5)
    d = load_arrays(tmp_path / "d.npz")
    np.testing.assert_array_equal(d.y, y)  # labels 5,6,7 encoded to 0,1,2
    assert d.classes == (5, 6, 7)


def test_arrays_regression_keeps_values(tmp_path, rng):
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    np.savez(tmp_path / "r.npz", X=X, y=y)
    d = load_dataset("arrays", path=tmp_path / "r.npz", task="regression")
    np.testing.assert_allclose(d.y, y.astype(np.float32))
    assert d.n_outputs == 1


def test_arrays_missing_key(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"lacks array\(s\) \['y'\]"):
        load_arrays(tmp_path / "d.npz")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz does not exist"):
        load_arrays(tmp_path / "nope.npz")


def test_length_mismatch_says_both_shapes():
    with pytest.raises(ValueError, match=r"X has 5 \(shape \(5, 2\)\), y has 4"):
        make_dataset(np.zeros((5, 2)), np.zeros(4))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_rejected(bad):
    X = np.zeros((4, 2))
    X[2, 1] = bad
    with pytest.raises(ValueError, match=r"X holds 1 NaN or infinite value\(s\) \(first at index \(2, 1\)\)"):
        make_dataset(X, np.array([0, 1, 0, 1]))


def test_single_class_rejected():
    with pytest.raises(ValueError, match="at least 2 classes"):
        make_dataset(np.zeros((4, 2)), np.zeros(4, dtype=int))


def test_unknown_task_suggests():
    with pytest.raises(ValueError, match="did you mean 'regression'"):
        make_dataset(np.zeros((4, 2)), np.zeros(4), task="regresion")


def test_images_folder(tmp_path, rng):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            arr = (rng.random((6, 5)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    d = load_images(tmp_path)
    assert d.X.shape == (6, 1, 6, 5) and d.classes == ("cat", "dog")
    first = np.asarray(Image.open(tmp_path / "cat" / "0.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(d.X[0, 0], first)


def test_images_of_different_sizes_rejected(tmp_path):
    for cls, size in (("a", (4, 4)), ("b", (5, 4))):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.zeros(size, np.uint8)).save(tmp_path / cls / "x.png")
    with pytest.raises(DataError, match="differ in shape"):
        load_images(tmp_path)


def test_table_with_string_target(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n")
    d = load_table(tmp_path / "t.csv", target="label")
    np.testing.assert_array_equal(d.X, [[1, 2], [3, 4], [5, 6]])
    assert d.classes == ("x", "y") and list(d.y) == [0, 1, 0]


def test_table_unknown_target_suggests(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,x\n3,4,y\n")
    with pytest.raises(ValueError, match="did you mean 'label'"):
        load_table(tmp_path / "t.csv", target="lable")


def test_table_non_numeric_feature(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,q,0\n3,4,1\n")
    with pytest.raises(DataError, match="feature column 'b' is not numeric"):
        load_table(tmp_path / "t.csv", target="y")


def test_table_empty_cell_is_nan_and_rejected(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,,0\n3,4,1\n")
    with pytest.raises(ValueError, match="NaN"):
        load_table(tmp_path / "t.csv", target="y")
