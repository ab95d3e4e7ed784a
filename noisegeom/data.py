"""Synthetic Gaussian data with a chosen covariance spectrum, the digits data, and readers for
MNIST, Fashion-MNIST and CIFAR-10 from files the user already has.

The linear-model results (chapter 4) depend on the input covariance S only
through its spectrum, in particular through the effective dimension
d_eff = (Tr S)² / ‖S‖_F². The functions here draw x ~ N(0, S) with S diagonal
(a power law k^{-α}, optionally truncated to rank r) so that d_eff can be
dialled from 1 to d.

The image readers (:func:`load_mnist`, :func:`load_cifar10`) never download anything: they
read the data sets' own file formats from a folder the user names. They read the formats
directly, with numpy, rather than through ``torchvision.datasets``: torchvision from PyPI does
not import beside the pinned CPU torch 2.13.0 (``RuntimeError: operator torchvision::nms does
not exist``), and both formats are a few lines to parse and to check. A folder that
torchvision once filled (``MNIST/raw``, ``FashionMNIST/raw``, ``cifar-10-batches-py``) is
read as it is.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch

from ._checks import (DTYPE, as_tensor, check_bool, check_finite_result, check_int, check_positive,
                      check_seed)

__all__ = [
    "power_law_spectrum",
    "effective_dimension",
    "gaussian_inputs",
    "teacher_labels",
    "load_digits",
    "load_mnist",
    "load_cifar10",
]


def power_law_spectrum(d: int, alpha: float = 1.0, *, rank: int | None = None) -> np.ndarray:
    """Eigenvalues λ_k ∝ k^{-α}, k = 1..d, zero beyond ``rank``, normalised to Tr S = d.

    Parameters
    ----------
    d : int
        Dimension.
    alpha : float, default 1
        Decay exponent; α = 0 is isotropic (d_eff = rank).
    rank : int, optional
        Keep only the first ``rank`` eigenvalues (low-rank inputs).

    Returns
    -------
    numpy.ndarray, shape (d,)
        Non-increasing, summing to d.
    """
    d = check_int(d, "d", low=1)
    rank = d if rank is None else check_int(rank, "rank", low=1, high=d)
    alpha = check_positive(alpha, "alpha", allow_zero=True)
    lam = np.zeros(d)
    lam[:rank] = np.arange(1, rank + 1, dtype=float) ** (-alpha)
    return lam * (d / lam.sum())


def effective_dimension(spectrum) -> float:
    """d_eff = (Σ λ_k)² / Σ λ_k², between 1 and the rank (chapter 4)."""
    lam = as_tensor(spectrum, "spectrum", ndim=1).numpy()
    if (lam < 0).any():
        raise ValueError("spectrum must be non-negative")
    with np.errstate(over="ignore"):                      # an overflow is reported just below
        s2 = float(check_finite_result((lam ** 2).sum(), "Σ λ_k²", "the entries of spectrum"))
    if s2 == 0:
        raise ValueError("spectrum is identically zero")
    return float(check_finite_result(lam.sum() ** 2 / s2, "d_eff", "the entries of spectrum"))


def gaussian_inputs(n: int, spectrum, *, seed: int = 0) -> torch.Tensor:
    """Draw n inputs x_i ~ N(0, diag(spectrum)), float64, shape (n, d)."""
    n = check_int(n, "n", low=1)
    lam = as_tensor(spectrum, "spectrum", ndim=1)
    if (lam < 0).any():
        raise ValueError("spectrum must be non-negative (it is the diagonal of a covariance)")
    g = torch.Generator().manual_seed(check_seed(seed))
    return torch.randn(n, lam.numel(), generator=g, dtype=DTYPE) * lam.sqrt()


def teacher_labels(X, theta_star, *, noise_std: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Labels y_i = θ*ᵀx_i + ε_i with ε_i ~ N(0, noise_std²)."""
    X = as_tensor(X, "X", ndim=2)
    theta_star = as_tensor(theta_star, "theta_star", ndim=1)
    if theta_star.numel() != X.shape[1]:
        raise ValueError(f"theta_star must have length d = {X.shape[1]}, got {theta_star.numel()}")
    noise_std = check_positive(noise_std, "noise_std", allow_zero=True)
    seed = check_seed(seed)
    y = check_finite_result(X @ theta_star, "y = X θ*", "X or theta_star")
    if noise_std > 0:
        g = torch.Generator().manual_seed(seed + 1)
        y = y + noise_std * torch.randn(X.shape[0], generator=g, dtype=DTYPE)
    return y


def load_digits(*, test_fraction: float = 0.25, seed: int = 0, standardize: bool = True,
                classes=None) -> dict:
    """scikit-learn's bundled 8×8 digits (1797 images; no download).

    Parameters
    ----------
    test_fraction : float
        Fraction held out for testing (stratified split).
    seed : int
        Seed of the split.
    standardize : bool
        Centre and scale pixels by training statistics.
    classes : sequence of int, optional
        Keep only these digits (labels are re-indexed 0..len(classes)-1).

    Returns
    -------
    dict
        ``X_train``, ``X_test`` (float64, shape (m, 64)), ``y_train``, ``y_test``
        (int64 labels), and ``n_classes``.
    """
    try:
        from sklearn.datasets import load_digits as _load
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError('load_digits reads the digits bundled with scikit-learn: pip install "noisegeom[book]"'
                          ) from exc

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    data = _load()
    X, y = data.data.astype(np.float64), data.target.astype(np.int64)
    if classes is not None:
        classes = list(classes)
        keep = np.isin(y, classes)
        X, y = X[keep], np.searchsorted(np.array(sorted(classes)), y[keep])
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)
    if standardize:
        mu, sd = Xtr.mean(0), Xtr.std(0)
        sd[sd == 0] = 1.0
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    return {
        "X_train": torch.as_tensor(Xtr, dtype=DTYPE), "y_train": torch.as_tensor(ytr),
        "X_test": torch.as_tensor(Xte, dtype=DTYPE), "y_test": torch.as_tensor(yte),
        "n_classes": int(y.max() + 1),
    }


# ------------------------------------------------------------------ image data sets from the user's folder

_MNIST_CLASSES = {
    "mnist": tuple(str(k) for k in range(10)),
    "fashion": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"),
}
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_MNIST_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_MNIST_FOLDER = {"mnist": "MNIST", "fashion": "FashionMNIST"}        # torchvision's root/<folder>/raw
_MNIST_SOURCE = {
    "mnist": "Get the four files (plain or .gz) from https://ossci-datasets.s3.amazonaws.com/mnist/ (a copy of "
             "http://yann.lecun.com/exdb/mnist/) and put them in root.",
    "fashion": "Get the four files (.gz) from https://github.com/zalandoresearch/fashion-mnist (folder "
               "data/fashion) and put them in root.",
}
# IDX magic number: two zero bytes, 0x08 (unsigned bytes), the number of dimensions
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = {True: tuple(f"data_batch_{k}" for k in range(1, 6)), False: ("test_batch",)}
_CIFAR_SOURCE = ("Get cifar-10-python.tar.gz ('CIFAR-10 python version') from "
                 "https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass the folder that holds "
                 f"{_CIFAR_FOLDER} (or that folder itself) as root.")
_STATS_NOTE = ("standardize=True standardises the test set by the training set's statistics, so it needs the "
               "training files too; pass standardize=False to read the test set alone. ")
_CHUNK = 4096                                                       # images per block in the integer sums


def load_mnist(root, *, kind: str = "mnist", train: bool = True, standardize: bool = True,
               limit: int | None = None) -> dict:
    r"""MNIST or Fashion-MNIST from the IDX files in a folder of the user's (nothing is downloaded).

    The files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte`` (60 000 images),
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (10 000), plain or ``.gz``, are looked
    for in ``root``, ``root/raw`` and ``root/MNIST/raw`` (``root/FashionMNIST/raw`` for
    Fashion-MNIST), so a folder that torchvision once filled works as it is. Magic numbers,
    dimensions, file lengths and the agreement of images and labels are checked.

    Parameters
    ----------
    root : str or os.PathLike
        The folder that holds the files.
    kind : {'mnist', 'fashion'}
        Handwritten digits, or Zalando's Fashion-MNIST (the same format, other classes; the
        files do not say which they hold, so those in ``root`` or ``root/raw`` are read as
        the kind named).
    train : bool
        The training split, or the test split.
    standardize : bool
        Scale the pixels to [0, 1], then standardise by the *training* set's statistics,
        x' = (x/255 − m)/s, with m and s the mean and standard deviation (ddof 0) of all pixels
        of all training images. One statistic per channel rather than per pixel: a border pixel
        that is nonzero in one image of n has, standardised, the value √(n−1) ≈ 245 there, and
        one shift and scale for every pixel keeps the images' spatial structure, which a
        convolution reads. The test split needs the training images for m and s.
        Without standardisation the pixels are x/255 ∈ [0, 1].
    limit : int, optional
        Keep the first ``limit`` images of the split (quick runs). The statistics are those of
        the whole training set all the same, so the transform does not depend on ``limit``.

    Returns
    -------
    dict
        ``X`` (float64, shape (m, 784): each image flattened row-major, as
        ``ng.small_cnn(image_shape=(1, 28, 28))`` reads it), ``y`` (int64 labels 0..9),
        ``image_shape`` (1, 28, 28) (height and width as the files' headers state them),
        ``n_classes`` 10, ``classes`` (the names), and ``mean``, ``std`` (float64, shape (1,):
        m and s; None without standardisation). The 60 000 training images take 376 MB as
        float64.

    Raises
    ------
    FileNotFoundError
        A file is missing (the message lists the paths tried and where to get the files).
    ValueError
        A file is truncated or is not what its name says (the message names it).
    """
    root = _check_root(root)
    if not isinstance(kind, str) or kind not in _MNIST_CLASSES:
        raise ValueError(f"kind must be 'mnist' or 'fashion', got {kind!r}")
    train, standardize = check_bool(train, "train"), check_bool(standardize, "standardize")
    limit = None if limit is None else check_int(limit, "limit", low=1)
    folders = (root, root / "raw", root / _MNIST_FOLDER[kind] / "raw")

    def find(name, note=""):
        return _find_file(folders, name, (name, name + ".gz"), note + _MNIST_SOURCE[kind])

    img_path, lab_path = (find(name) for name in _MNIST_FILES[train])
    images, labels = _read_idx(img_path, _IDX_IMAGES), _read_idx(lab_path, _IDX_LABELS)
    if len(labels) != len(images):
        raise ValueError(f"{lab_path} holds {len(labels)} labels but {img_path} holds {len(images)} images: "
                         f"the two files are not of one data set")
    _check_labels(labels, 10, lab_path)
    stats = None
    if standardize:
        train_images = images if train else _read_idx(find(_MNIST_FILES[True][0], _STATS_NOTE), _IDX_IMAGES)
        stats = _channel_stats(train_images[:, None])
    return _image_dict(images[:, None], labels, limit, stats, _MNIST_CLASSES[kind])


def load_cifar10(root, *, train: bool = True, standardize: bool = True, limit: int | None = None) -> dict:
    r"""CIFAR-10 from its 'python version' files in a folder of the user's (nothing is downloaded).

    The batches ``data_batch_1`` … ``data_batch_5`` (10 000 images each, the training set) and
    ``test_batch`` are looked for in ``root`` and ``root/cifar-10-batches-py``. Each is a
    pickled dict whose ``b'data'`` is a uint8 array of shape (m, 3072) (the red, green, blue
    32×32 planes of an image, row-major) and ``b'labels'`` a list of m labels 0..9.

    Unpickling may call any function the file names, so a pickle from elsewhere could run
    arbitrary code. The files are read by an unpickler that resolves only numpy's array and
    dtype constructors (all a CIFAR batch holds) and refuses every other name; what is left a
    crafted file can do is allocate memory.

    Parameters
    ----------
    root : str or os.PathLike
        The folder that holds ``cifar-10-batches-py``, or that folder itself.
    train : bool
        The training set (the five batches in order), or the test batch.
    standardize : bool
        Scale the pixels to [0, 1], then standardise each colour channel c by the *training*
        set's statistics, x' = (x/255 − m_c)/s_c, with m_c, s_c the mean and standard
        deviation (ddof 0) of channel c over all pixels of all training images (the usual
        per-channel normalisation; it keeps the spatial structure a convolution reads). The
        test set needs the training batches for m and s. Without standardisation the pixels
        are x/255 ∈ [0, 1].
    limit : int, optional
        Keep the first ``limit`` images (quick runs); the statistics are the whole training
        set's all the same.

    Returns
    -------
    dict
        ``X`` (float64, shape (m, 3072), each image flattened as (3, 32, 32), as
        ``ng.small_cnn(image_shape=(3, 32, 32))`` reads it), ``y`` (int64 labels 0..9),
        ``image_shape`` (3, 32, 32), ``n_classes`` 10, ``classes`` (the names), and ``mean``,
        ``std`` (float64, shape (3,): m_c and s_c; None without standardisation). The 50 000
        training images take 1.2 GB as float64: ``limit`` keeps less.

    Raises
    ------
    FileNotFoundError
        A batch is missing (the message lists the paths tried and where to get the files).
    ValueError
        A batch is truncated, is not a CIFAR-10 batch, or names a global outside the
        allow-list (the message names the file).
    """
    root = _check_root(root)
    train, standardize = check_bool(train, "train"), check_bool(standardize, "standardize")
    limit = None if limit is None else check_int(limit, "limit", low=1)
    folders = (root, root / _CIFAR_FOLDER)
    images, labels = _read_cifar_split(folders, train)
    stats = None
    if standardize:
        stats = _channel_stats(images if train else _read_cifar_split(folders, True, _STATS_NOTE)[0])
    return _image_dict(images, labels, limit, stats, _CIFAR10_CLASSES)


def _check_root(root) -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path to a folder (str or os.PathLike), got {type(root).__name__}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"root must be an existing folder, got {os.fspath(root)!r}")
    return path


def _find_file(folders, name: str, candidates, hint: str) -> Path:
    """The first of ``folder/candidate`` that is a file; else an error listing every path tried."""
    tried = [folder / c for folder in folders for c in candidates]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name} not found; looked for {', '.join(map(str, tried))}. {hint} "
                            f"Nothing is downloaded here.")


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path} is not a complete gzip file ({exc}): the download was cut short or the file "
                         f"is corrupt; fetch it again") from exc


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes: its magic number, big-endian dimensions and length checked."""
    raw = _read_bytes(path)
    ndim, what = magic & 0xFF, "images" if magic == _IDX_IMAGES else "labels"
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, fewer than the {head}-byte header of an IDX "
                         f"file of {what}")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        gz = " (it is gzip-compressed: name it .gz)" if raw[:2] == b"\x1f\x8b" else ""
        raise ValueError(f"{path} is not an IDX file of {what}: magic number {got:#010x}, expected {magic:#010x} "
                         f"(unsigned bytes in {ndim} dimension{'s' * (ndim > 1)}){gz}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if min(dims) == 0:
        raise ValueError(f"{path} holds no {what}: its dimensions are {dims}")
    size = head + math.prod(dims)
    if len(raw) != size:
        raise ValueError(f"{path} has {len(raw)} bytes, expected {size} (the {head}-byte header and "
                         f"{' × '.join(map(str, dims))} bytes of {what}): the file is truncated or corrupt")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def _check_labels(labels: np.ndarray, n_classes: int, path: Path) -> None:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"{path} holds the label {lo if lo < 0 else hi}, outside 0..{n_classes - 1}")


class _Refused(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list."""


_PROBE = np.zeros(1, np.uint8)
# What a pickled numpy array calls, taken from numpy itself (its reconstructor moved from
# numpy.core to numpy._core in numpy 2), under the names that Python 2's cPickle (the CIFAR
# files), numpy 1.x and numpy 2.x (protocol 5: _frombuffer) write.
_ARRAY_GLOBALS = {
    **{(m, "_reconstruct"): _PROBE.__reduce__()[0] for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _PROBE.__reduce_ex__(5)[0] for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts, lists, strings and numbers, and calls nothing else.

    Every callable a pickle uses (REDUCE, NEWOBJ, BUILD's classes, copyreg extensions) is looked
    up through ``find_class``: resolving only numpy's array constructors leaves a crafted file no
    way to run code (Python's documentation, pickle, "Restricting Globals").
    """

    def find_class(self, module, name):
        try:
            return _ARRAY_GLOBALS[module, name]
        except KeyError:
            raise _Refused(f"the pickle names the global {module}.{name}, which a CIFAR-10 batch does not hold: "
                           f"refused, since unpickling it could run arbitrary code (only numpy's array "
                           f"constructors are allowed)") from None


def _read_cifar_split(folders, train: bool, note: str = "") -> tuple[np.ndarray, np.ndarray]:
    batches = [_read_cifar_batch(_find_file(folders, name, (name,), note + _CIFAR_SOURCE))
               for name in _CIFAR_FILES[train]]
    images = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
    return images, np.concatenate([b[1] for b in batches])


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            # encoding='bytes': the files come from Python 2, whose str (keys, the pixel string) is bytes
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except _Refused as exc:
        raise ValueError(f"{path}: {exc}") from None
    except Exception as exc:    # a damaged pickle fails in many ways: EOFError, UnpicklingError, KeyError, ...
        raise ValueError(f"{path} is not a readable CIFAR-10 python batch ({type(exc).__name__}: {exc}): the file "
                         f"is truncated or corrupt") from exc
    data = batch.get(b"data") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3072 and len(data) > 0):
        got = (f"b'data' a {data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else f"a dict with keys {list(batch)}" if isinstance(batch, dict) else f"a {type(batch).__name__}")
        raise ValueError(f"{path} is not a CIFAR-10 python batch: expected a dict whose b'data' is a uint8 array "
                         f"of shape (m, 3072), got {got}")
    labels = np.asarray(batch.get(b"labels", []))
    if labels.ndim != 1 or len(labels) != len(data):
        raise ValueError(f"{path} holds {len(labels) if labels.ndim == 1 else labels.shape} labels (b'labels') "
                         f"for {len(data)} images")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: b'labels' must hold integer class labels, got {labels.dtype}")
    _check_labels(labels, 10, path)
    return data, labels


def _channel_stats(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (ddof 0) per channel of the pixels x/255 of uint8 images (N, C, ...).

    From exact integer sums Σx and Σx² (in blocks, so no float64 copy of the whole set), the
    variance as (mΣx² − (Σx)²)/(255m)² in Python integers, rounded once.
    """
    flat = images.reshape(images.shape[0], images.shape[1], -1)
    m = flat.shape[0] * flat.shape[2]
    mean, std = np.empty(flat.shape[1]), np.empty(flat.shape[1])
    for c in range(flat.shape[1]):
        s1 = s2 = 0
        for start in range(0, flat.shape[0], _CHUNK):
            block = flat[start:start + _CHUNK, c].astype(np.int64)
            s1, s2 = s1 + int(block.sum()), s2 + int((block * block).sum())
        mean[c], std[c] = s1 / (255 * m), math.sqrt((m * s2 - s1 * s1) / (255 * m) ** 2)
    std[std == 0] = 1.0                                       # a constant channel is only centred
    return torch.from_numpy(mean), torch.from_numpy(std)


def _image_dict(images: np.ndarray, labels: np.ndarray, limit, stats, classes) -> dict:
    """uint8 images (N, C, H, W) → the flattened float64 X (standardised by ``stats``), y and the metadata."""
    if limit is not None:
        limit = check_int(limit, "limit", low=1, high=len(images))
        images, labels = images[:limit], labels[:limit]
    n, shape = len(images), tuple(images.shape[1:])
    X = torch.from_numpy(images.reshape(n, -1).astype(np.float64)).div_(255)
    mean = std = None
    if stats is not None:
        mean, std = stats
        X.view(n, shape[0], -1).sub_(mean[:, None]).div_(std[:, None])
    return {"X": X, "y": torch.from_numpy(labels.astype(np.int64)), "image_shape": shape,
            "n_classes": len(classes), "classes": classes, "mean": mean, "std": std}
