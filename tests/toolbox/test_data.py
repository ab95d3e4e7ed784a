"""Tests of noisegeom.data: the spectra and the effective dimension against closed forms, the
Gaussian inputs and teacher labels against Monte Carlo, the digits data set's split, and the
MNIST / CIFAR-10 readers on small files written here in the real on-disk formats (IDX with its
big-endian header, plain and gzip; CIFAR's pickles as Python 2's cPickle wrote them)."""

import gzip
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch

import noisegeom as ng
from _fixtures import DT, cov_within


def test_power_law_spectrum():
    lam = ng.power_law_spectrum(10, 1.5)
    assert lam.shape == (10,) and lam.sum() == pytest.approx(10.0, rel=1e-14)
    k = np.arange(1, 11)
    assert np.allclose(lam / lam[0], k ** -1.5, rtol=1e-14)
    assert np.allclose(ng.power_law_spectrum(7, 0.0), 1.0)
    low = ng.power_law_spectrum(10, 1.0, rank=3)
    assert (low[3:] == 0).all() and low.sum() == pytest.approx(10.0)
    assert np.allclose(low[:3] / low[0], [1, 1 / 2, 1 / 3])


def test_effective_dimension_closed_forms():
    assert ng.effective_dimension(np.ones(8)) == pytest.approx(8.0)
    assert ng.effective_dimension(ng.power_law_spectrum(10, 0.0, rank=4)) == pytest.approx(4.0)
    assert ng.effective_dimension([3.0, 0, 0]) == pytest.approx(1.0)
    lam = np.array([4.0, 2.0, 1.0])
    assert ng.effective_dimension(lam) == pytest.approx(49.0 / 21.0, rel=1e-14)
    # decreasing in α at fixed d
    d_effs = [ng.effective_dimension(ng.power_law_spectrum(50, a)) for a in (0.0, 0.5, 1.0, 2.0)]
    assert all(x > y for x, y in zip(d_effs, d_effs[1:]))


def test_gaussian_inputs_covariance_monte_carlo():
    lam = np.array([3.0, 1.0, 0.25, 0.0])
    X = ng.gaussian_inputs(20000, lam, seed=3)
    assert X.shape == (20000, 4) and X.dtype == torch.float64
    ok, z, _ = cov_within(X.numpy()[:, :3], np.zeros(3), np.diag(lam[:3]))
    assert ok, z
    assert (X[:, 3] == 0).all()
    assert torch.equal(X, ng.gaussian_inputs(20000, lam, seed=3))


def test_teacher_labels():
    X = ng.gaussian_inputs(5000, np.ones(3), seed=1)
    ts = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    assert torch.equal(ng.teacher_labels(X, ts), X @ ts)
    y = ng.teacher_labels(X, ts, noise_std=0.5, seed=2)
    eps = (y - X @ ts).numpy()
    # sample variance of 5000 N(0, 0.25) draws: SE = 0.25·√(2/5000)
    assert abs(eps.var() - 0.25) < 5 * 0.25 * math.sqrt(2 / 5000)
    assert torch.equal(y, ng.teacher_labels(X, ts, noise_std=0.5, seed=2))


def test_load_digits():
    data = ng.load_digits(seed=0)
    Xtr, Xte, ytr, yte = data["X_train"], data["X_test"], data["y_train"], data["y_test"]
    assert Xtr.shape[0] + Xte.shape[0] == 1797 and Xtr.shape[1] == Xte.shape[1] == 64
    assert Xtr.dtype == torch.float64 and ytr.dtype == torch.int64
    assert data["n_classes"] == 10
    assert abs(Xte.shape[0] / 1797 - 0.25) < 0.01
    # standardised by training statistics: mean 0 and std 1 (or 0 for constant pixels)
    assert torch.allclose(Xtr.mean(0), torch.zeros(64, dtype=DT), atol=1e-12)
    sd = Xtr.std(0, unbiased=False)
    assert torch.all(((sd - 1).abs() < 1e-12) | (sd < 1e-12))
    # stratified: class shares agree between train and test to within one sample per class
    ftr = np.bincount(ytr.numpy(), minlength=10) / len(ytr)
    fte = np.bincount(yte.numpy(), minlength=10) / len(yte)
    assert np.abs(ftr - fte).max() < 1.5 / len(yte)
    sub = ng.load_digits(classes=[3, 8], standardize=False, test_fraction=0.5)
    assert sub["n_classes"] == 2 and set(sub["y_train"].tolist()) == {0, 1}
    assert sub["X_train"].max() <= 16 and sub["X_train"].min() >= 0   # raw pixel intensities 0..16


# ------------------------------------------------------------------ MNIST: IDX files

MNIST_NAMES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: the magic number and the dimensions as big-endian 32-bit integers, then the bytes."""
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def _write(path, payload: bytes, gz: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def _mnist_split(folder, images, labels, train=True, gz=False):
    img, lab = MNIST_NAMES[train]
    return (_write(folder / img, _idx(images, 0x803), gz), _write(folder / lab, _idx(labels, 0x801), gz))


def _images(n, shape, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), rng.integers(0, 10, size=n, dtype=np.uint8)


@pytest.mark.parametrize("layout", ["", "raw", "MNIST/raw"])
@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_reads_the_idx_files_exactly(tmp_path, layout, gz):
    imgs, labs = _images(5, (6, 4), seed=1)                  # H ≠ W: the header's order is kept
    _mnist_split(tmp_path / layout, imgs, labs, train=True, gz=gz)
    d = ng.load_mnist(tmp_path, standardize=False)
    assert d["X"].dtype == torch.float64 and d["y"].dtype == torch.int64
    assert d["X"].shape == (5, 24) and d["image_shape"] == (1, 6, 4)
    for i in range(5):                                        # pixel (h, w) of image i sits at h·W + w
        for h in range(6):
            for w in range(4):
                assert d["X"][i, h * 4 + w].item() == imgs[i, h, w] / 255.0
    assert d["y"].tolist() == labs.tolist()
    assert d["n_classes"] == 10 and d["classes"] == tuple("0123456789")
    assert d["mean"] is None and d["std"] is None


def test_load_mnist_standardises_by_the_training_pixels(tmp_path):
    tr, ltr = _images(7, (28, 28), seed=2)
    te, lte = _images(4, (28, 28), seed=3)
    _mnist_split(tmp_path / "MNIST" / "raw", tr, ltr, train=True, gz=True)     # torchvision's layout
    _mnist_split(tmp_path / "MNIST" / "raw", te, lte, train=False, gz=True)
    P, Q = tr.reshape(7, -1) / 255.0, te.reshape(4, -1) / 255.0
    m, s = P.mean(), P.std()                                  # one channel: all pixels of all images
    d = ng.load_mnist(tmp_path)
    assert d["mean"].item() == pytest.approx(m, rel=1e-15) and d["std"].item() == pytest.approx(s, rel=1e-15)
    assert np.allclose(d["X"].numpy(), (P - m) / s, rtol=1e-13, atol=1e-13)
    assert abs(d["X"].mean().item()) < 1e-13 and d["X"].std(unbiased=False).item() == pytest.approx(1.0, rel=1e-13)
    t = ng.load_mnist(tmp_path, train=False)                  # the test set: the training statistics
    assert np.allclose(t["X"].numpy(), (Q - m) / s, rtol=1e-13, atol=1e-13) and t["y"].tolist() == lte.tolist()
    assert torch.equal(t["mean"], d["mean"]) and torch.equal(t["std"], d["std"])
    # limit keeps the first images; the transform stays the whole training set's
    cut = ng.load_mnist(tmp_path, limit=3)
    assert torch.equal(cut["X"], d["X"][:3]) and torch.equal(cut["y"], d["y"][:3])
    assert torch.equal(cut["mean"], d["mean"])
    # the flattening small_cnn(image_shape=(1, 28, 28)) reads
    net = ng.small_cnn(image_shape=d["image_shape"])
    assert net(net.theta0, d["X"]).shape == (7, 10)


def test_load_mnist_constant_images_are_only_centred(tmp_path):
    _mnist_split(tmp_path, np.full((3, 2, 2), 51, np.uint8), np.zeros(3, np.uint8))
    d = ng.load_mnist(tmp_path)
    assert d["std"].item() == 1.0 and d["mean"].item() == pytest.approx(0.2, rel=1e-15)
    assert torch.equal(d["X"], torch.zeros(3, 4, dtype=DT))


def test_load_fashion_mnist_reads_its_own_folder_and_names(tmp_path):
    imgs, labs = _images(4, (28, 28), seed=4)
    _mnist_split(tmp_path / "FashionMNIST" / "raw", imgs, labs)
    d = ng.load_mnist(tmp_path, kind="fashion", standardize=False)
    assert np.array_equal(d["X"].numpy(), imgs.reshape(4, -1) / 255.0) and d["y"].tolist() == labs.tolist()
    assert d["classes"][0] == "T-shirt/top" and d["classes"][9] == "Ankle boot" and len(d["classes"]) == 10
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte not found"):
        ng.load_mnist(tmp_path, standardize=False)            # MNIST is not looked for in FashionMNIST/raw


def test_load_mnist_missing_files_list_every_path_tried(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ng.load_mnist(tmp_path)
    msg = str(err.value)
    for folder in (tmp_path, tmp_path / "raw", tmp_path / "MNIST" / "raw"):
        for name in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"):
            assert str(folder / name) in msg
    assert "ossci-datasets" in msg and "Nothing is downloaded" in msg
    # the test split alone reads without standardisation; with it, the training images are needed
    te, lte = _images(3, (28, 28), seed=5)
    _mnist_split(tmp_path, te, lte, train=False)
    assert ng.load_mnist(tmp_path, train=False, standardize=False)["X"].shape == (3, 784)
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte not found.*pass standardize=False"):
        ng.load_mnist(tmp_path, train=False)
    with pytest.raises(FileNotFoundError, match=r"fashion-mnist"):
        ng.load_mnist(tmp_path, kind="fashion")


def _bad_mnist(tmp_path, images=None, labels=None):
    """A training split whose image and label files hold the given bytes (valid ones otherwise)."""
    imgs, labs = _images(5, (3, 3), seed=6)
    img_path, lab_path = _mnist_split(tmp_path, imgs, labs)
    if images is not None:
        img_path.write_bytes(images(img_path.read_bytes()))
    if labels is not None:
        lab_path.write_bytes(labels(lab_path.read_bytes()))
    return img_path, lab_path


@pytest.mark.parametrize("case, images, labels, exc, match", [
    ("wrong magic", lambda b: _idx(np.zeros(45, np.uint8), 0x801), None, ValueError,
     r"train-images-idx3-ubyte is not an IDX file of images: magic number 0x00000801, expected 0x00000803"),
    ("gzip without .gz", lambda b: gzip.compress(b), None, ValueError, r"magic number .*name it \.gz"),
    ("truncated", lambda b: b[:-1], None, ValueError,
     r"train-images-idx3-ubyte has 60 bytes, expected 61 \(the 16-byte header and 5 × 3 × 3 bytes of images\)"),
    ("too long", lambda b: b + b"\0", None, ValueError, r"has 62 bytes, expected 61"),
    ("header cut", lambda b: b[:10], None, ValueError, r"is truncated: 10 bytes, fewer than the 16-byte header"),
    ("no images", lambda b: _idx(np.zeros((0, 3, 3), np.uint8), 0x803), None, ValueError,
     r"holds no images: its dimensions are \(0, 3, 3\)"),
    ("label count", None, lambda b: _idx(np.zeros(4, np.uint8), 0x801), ValueError,
     r"train-labels-idx1-ubyte holds 4 labels but .*train-images-idx3-ubyte holds 5 images"),
    ("label range", None, lambda b: _idx(np.array([0, 1, 10, 2, 3]), 0x801), ValueError,
     r"train-labels-idx1-ubyte holds the label 10, outside 0\.\.9"),
    ("labels as images", None, lambda b: _idx(np.zeros((5, 1, 1), np.uint8), 0x803), ValueError,
     r"train-labels-idx1-ubyte is not an IDX file of labels: magic number 0x00000803, expected 0x00000801"),
])
def test_load_mnist_damaged_files_are_named(tmp_path, case, images, labels, exc, match):
    _bad_mnist(tmp_path, images, labels)
    with pytest.raises(exc, match=match):
        ng.load_mnist(tmp_path)


def test_load_mnist_cut_gzip_and_limit(tmp_path):
    imgs, labs = _images(5, (3, 3), seed=7)
    img_path, _ = _mnist_split(tmp_path, imgs, labs, gz=True)
    with pytest.raises(ValueError, match="limit must be <= 5, got 6"):
        ng.load_mnist(tmp_path, limit=6)
    img_path.write_bytes(img_path.read_bytes()[:-12])        # the gzip trailer and some data gone
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz is not a complete gzip file"):
        ng.load_mnist(tmp_path)


# ------------------------------------------------------------------ CIFAR-10: pickled batches

def _py2_pickle(batch: dict) -> bytes:
    """A dict pickled as Python 2's cPickle (protocol 2) wrote the CIFAR-10 batches: str (keys, the
    pixel string) as BINSTRING, the array through numpy.core.multiarray._reconstruct and BUILD."""
    def string(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def integer(i):
        return (b"K" + bytes([i]) if 0 <= i < 256 else b"M" + struct.pack("<H", i) if 0 <= i < 65536
                else b"J" + struct.pack("<i", i))

    def value(v):
        if isinstance(v, bytes):
            return string(v)
        if isinstance(v, int):
            return integer(v)
        if isinstance(v, list):
            return b"](" + b"".join(value(x) for x in v) + b"e"
        assert v.dtype == np.uint8 and v.ndim == 2
        dtype = (b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
                 + b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb")
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b")
                + b"\x87R(" + integer(1) + integer(v.shape[0]) + integer(v.shape[1]) + b"\x86" + dtype + b"\x89"
                + string(v.tobytes()) + b"tb")

    return b"\x80\x02}(" + b"".join(string(k) + value(v) for k, v in batch.items()) + b"u."


def _cifar_batch(n, seed, label="training batch"):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    return {b"batch_label": label.encode(), b"labels": labels, b"data": data,
            b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)]}


TRAIN_SIZES = (3, 2, 4, 1, 2)


def _write_cifar(folder, dump=_py2_pickle):
    folder.mkdir(parents=True, exist_ok=True)
    train = [_cifar_batch(n, seed=k) for k, n in enumerate(TRAIN_SIZES)]
    test = _cifar_batch(3, seed=10, label="testing batch")
    for k, b in enumerate(train):
        (folder / f"data_batch_{k + 1}").write_bytes(dump(b))
    (folder / "test_batch").write_bytes(dump(test))
    return train, test


def test_py2_pickle_writer_matches_pickles_reading():
    """The writer above is what Python's own unpickler reads as the dict (with numpy's names)."""
    b = _cifar_batch(2, seed=0)
    back = pickle.loads(_py2_pickle(b), encoding="bytes")
    assert back.keys() == b.keys() and back[b"labels"] == b[b"labels"] and back[b"filenames"] == b[b"filenames"]
    assert back[b"data"].dtype == np.uint8 and np.array_equal(back[b"data"], b[b"data"])


@pytest.mark.parametrize("layout", ["", "cifar-10-batches-py"])
def test_load_cifar10_reads_the_batches_exactly(tmp_path, layout):
    train, test = _write_cifar(tmp_path / layout)
    d = ng.load_cifar10(tmp_path, standardize=False)
    n = sum(TRAIN_SIZES)
    assert d["X"].shape == (n, 3072) and d["X"].dtype == torch.float64 and d["y"].dtype == torch.int64
    assert d["image_shape"] == (3, 32, 32) and d["n_classes"] == 10 and d["classes"][0] == "airplane"
    rows = [(b, r) for b in train for r in range(len(b[b"labels"]))]   # batches 1..5 in order
    rng = np.random.default_rng(0)
    for i, (b, r) in enumerate(rows):
        assert d["y"][i].item() == b[b"labels"][r]
        for c, h, w in rng.integers(0, [3, 32, 32], size=(20, 3)):    # red, green, blue planes, row-major
            assert d["X"][i].view(3, 32, 32)[c, h, w].item() == b[b"data"][r, c * 1024 + h * 32 + w] / 255.0
    assert np.array_equal(d["X"].numpy(), np.concatenate([b[b"data"] for b in train]) / 255.0)
    t = ng.load_cifar10(tmp_path, train=False, standardize=False)
    assert np.array_equal(t["X"].numpy(), test[b"data"] / 255.0) and t["y"].tolist() == test[b"labels"]


def test_load_cifar10_standardises_each_channel_by_the_training_set(tmp_path):
    train, test = _write_cifar(tmp_path / "cifar-10-batches-py")
    P = np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 1024) / 255.0
    Q = test[b"data"].reshape(-1, 3, 1024) / 255.0
    m = np.array([P[:, c].mean() for c in range(3)])
    s = np.array([P[:, c].std() for c in range(3)])
    d = ng.load_cifar10(tmp_path)
    assert np.allclose(d["mean"].numpy(), m, rtol=1e-15, atol=0) and np.allclose(d["std"].numpy(), s, rtol=1e-15, atol=0)
    assert np.allclose(d["X"].numpy(), ((P - m[:, None]) / s[:, None]).reshape(len(P), -1), rtol=1e-13, atol=1e-13)
    t = ng.load_cifar10(tmp_path, train=False)
    assert np.allclose(t["X"].numpy(), ((Q - m[:, None]) / s[:, None]).reshape(len(Q), -1), rtol=1e-13, atol=1e-13)
    cut = ng.load_cifar10(tmp_path, limit=6)                  # across batches 1, 2 and 3
    assert torch.equal(cut["X"], d["X"][:6]) and torch.equal(cut["y"], d["y"][:6])
    net = ng.small_cnn(image_shape=d["image_shape"])
    assert net(net.theta0, d["X"][:2]).shape == (2, 10)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_cifar10_reads_batches_pickled_again_by_python3(tmp_path, protocol):
    """A batch re-saved with Python 3 and numpy 2 (numpy._core names; _frombuffer at protocol 5)."""
    train, test = _write_cifar(tmp_path, dump=lambda b: pickle.dumps(b, protocol=protocol))
    if protocol == 2:                                        # Python 3 writes bytes at protocol 2 through _codecs.encode
        with pytest.raises(ValueError, match=r"_codecs\.encode.*refused"):
            ng.load_cifar10(tmp_path)
        return
    d = ng.load_cifar10(tmp_path, train=False, standardize=False)
    assert np.array_equal(d["X"].numpy(), test[b"data"] / 255.0) and d["y"].tolist() == test[b"labels"]


class _Evil:
    """Unpickled by a plain unpickler, this runs a shell command that leaves a file behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["top", "labels"])
def test_load_cifar10_refuses_a_pickle_that_calls_a_function(tmp_path, where):
    _write_cifar(tmp_path)
    marker = tmp_path / "was_run"
    b = _cifar_batch(2, seed=0)
    if where == "labels":
        b[b"labels"] = [0, _Evil(marker)]
    payload = pickle.dumps(_Evil(marker) if where == "top" else b, protocol=4)
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(ValueError, match=r"test_batch: the pickle names the global (posix|os|nt)\.system.*refused"):
        ng.load_cifar10(tmp_path, train=False, standardize=False)
    assert not marker.exists()


def test_load_cifar10_missing_and_damaged_batches_are_named(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as err:
        ng.load_cifar10(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "data_batch_3") in msg and str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in msg
    assert "cifar-10-python.tar.gz" in msg and "kriz/cifar.html" in msg
    assert ng.load_cifar10(tmp_path, train=False, standardize=False)["X"].shape == (3, 3072)
    with pytest.raises(FileNotFoundError, match=r"data_batch_3 not found.*pass standardize=False"):
        ng.load_cifar10(tmp_path, train=False)

    def bad(batch_or_bytes, match):
        payload = batch_or_bytes if isinstance(batch_or_bytes, bytes) else _py2_pickle(batch_or_bytes)
        (tmp_path / "test_batch").write_bytes(payload)
        with pytest.raises(ValueError, match=match):
            ng.load_cifar10(tmp_path, train=False, standardize=False)

    good = _py2_pickle(_cifar_batch(3, seed=1))
    bad(good[: len(good) // 2], r"test_batch is not a readable CIFAR-10 python batch \(.*\): the file is truncated")
    bad(b"", r"test_batch is not a readable CIFAR-10 python batch \(EOFError")
    b = _cifar_batch(3, seed=1)
    bad({**b, b"data": b[b"data"][:, :3000]},
        r"test_batch is not a CIFAR-10 python batch: expected .* shape \(m, 3072\), got b'data' a uint8 array of shape \(3, 3000\)")
    bad({b"fine_labels": [1, 2], b"data_x": b"x"}, r"got a dict with keys \[b'fine_labels', b'data_x'\]")
    bad({**b, b"labels": [1, 2]}, r"test_batch holds 2 labels \(b'labels'\) for 3 images")
    bad({**b, b"labels": [1, 2, 10]}, r"test_batch holds the label 10, outside 0\.\.9")
    bad({**b, b"labels": [b"a", b"b", b"c"]}, r"test_batch: b'labels' must hold integer class labels")
    (tmp_path / "test_batch").write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError, match=r"got a list"):
        ng.load_cifar10(tmp_path, train=False, standardize=False)
