"""Tests of chapter 9, *Real data*: noisegeom.chapters.ch09_real_data and scripts/real_data.py."""

import gzip
import json
import math
import pickle
import re
import struct

import numpy as np
import pytest
import torch

import noisegeom as ng
import real_data                                  # scripts/ is on the test path (pyproject.toml)
from noisegeom.chapters import ch09_real_data as ch9


# ---- scripts/real_data.py
# The script's larger-data path run in-process on tiny files in the loaders' formats: 40 images of
# 8×8 pixels (IDX headers state the size, so the MLP stays small: p = 1210), two records, one seed.
# Its `digits` subcommand takes about 10 minutes and is not run here; its parser is checked.

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--n", "40", "--steps", "4", "--record-at", "0", "4", "--eval-n", "20", "--m", "12", "--k", "2",
        "--n-random", "3", "--seeds", "1", "--batch-size", "8", "--device", "cpu"]


def _idx(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: the magic number and the dimensions as big-endian 32-bit integers, then the bytes."""
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def _write_mnist(folder, n=40, side=8, seed=0, gz=False):
    """The two training files of MNIST (the test split is not read), images of side × side pixels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in (("train-images-idx3-ubyte", _idx(images, 0x803)),
                          ("train-labels-idx1-ubyte", _idx(labels, 0x801))):
        (folder / (name + ".gz" * gz)).write_bytes(gzip.compress(payload) if gz else payload)
    return images, labels


def _write_cifar(folder, sizes=(8, 8, 8, 8, 8), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k, n in enumerate(sizes):
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, size=n).tolist(), b"batch_label": b"training batch"}
        (folder / f"data_batch_{k + 1}").write_bytes(pickle.dumps(batch, protocol=4))


def _check_results(out, *, models, optimizers, n, image_shape, records=(0, 4), S=1, k=2, n_random=3):
    """What every run writes: provenance, the data and settings, finite estimates inside their
    intervals, arrays over seeds × records, and two non-empty PNG figures."""
    res = json.loads((out / "results.json").read_text())
    prov = res["provenance"]
    for key in ("command", "commit", "torch", "noisegeom", "python", "device", "device_name", "date", "seconds"):
        assert prov[key] not in (None, ""), key
    assert prov["device"] == "cpu" and prov["command"].startswith("python scripts/real_data.py ")
    phases = prov["timings"]
    assert set(phases) == {"load", "to_device", "train", "estimate_mu", "measure", "evaluate", "figures"}
    assert all(v >= 0 for v in phases.values()) and sum(phases.values()) <= prov["seconds"] + 0.1
    assert res["data"]["n_train"] == n and res["data"]["image_shape"] == list(image_shape)
    st = res["settings"]
    assert st["m"] == 12 and st["estimator"]["m"] == 12 and st["estimator"]["n"] == n
    assert st["record_at"] == list(records) and st["eval_n"] == 20 and st["k"] == k
    assert set(res["results"]) == set(models)
    for name in models:
        assert set(res["results"][name]) == {"p", *optimizers}
        for opt in optimizers:
            r = {key: np.asarray(v, dtype=float) for key, v in res["results"][name][opt].items()
                 if key != "diverged"}
            assert res["results"][name][opt]["diverged"] == [False] * S
            assert r["steps"].tolist() == list(records)
            for key in ("mu_est", "mu_est_stderr", "mu_est_ci_low", "mu_est_ci_high", "mu_eval", "mu_iso_eval",
                        "train_loss", "train_accuracy", "loss_eval", "seconds_train", "seconds_measure"):
                assert r[key].shape == (S, len(records)) and np.isfinite(r[key]).all(), (name, opt, key)
            assert (r["mu_est"] > 0).all() and (r["mu_est_stderr"] > 0).all()
            assert (r["mu_est_ci_low"] <= r["mu_est"]).all() and (r["mu_est"] <= r["mu_est_ci_high"]).all()
            assert r["hess_values"].shape == r["g_top"].shape == r["g_bottom"].shape == (S, len(records), k)
            assert r["g_random"].shape == (S, len(records), n_random) and np.isfinite(r["g_top"]).all()
    for fig in ("alignment.png", "directions.png"):
        data = (out / fig).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, fig
    return res


def test_script_mnist_writes_results_and_figures_that_match_direct_calls(tmp_path):
    _write_mnist(tmp_path / "data" / "MNIST" / "raw", gz=True)
    out = tmp_path / "run"
    real_data.main(["mnist", "--root", str(tmp_path / "data"), *TINY, "--eta", "0.05", "--out", str(out)])
    res = _check_results(out, models=("MLP", "CNN"), optimizers=("SGD", "GD"), n=40, image_shape=(1, 8, 8))
    assert "mnist --root" in res["provenance"]["command"] and res["data"]["name"] == "MNIST"

    # the records against the toolbox called directly: the same data, network, subsample and eval subset
    data = ng.load_mnist(tmp_path / "data", limit=40)
    X, y = data["X"], data["y"]
    ev = torch.sort(torch.randperm(40, generator=torch.Generator().manual_seed(0))[:20]).values
    for name in ("MLP", "CNN"):
        model = ch9.digits_models(0, image_shape=(1, 8, 8))[name]
        for opt in ("SGD", "GD"):
            r = res["results"][name][opt]
            est = ng.estimate_mu(model, model.theta0, X, y, m=12, loss="cross_entropy", normalization="fisher", seed=0)
            assert r["mu_est"][0][0] == pytest.approx(est.value, rel=1e-12)
            assert r["mu_est_ci_high"][0][0] == pytest.approx(est.ci_high, rel=1e-12)
            geo = ng.NoiseGeometry.from_model(model, model.theta0, X[ev], y[ev], loss="cross_entropy")
            assert r["mu_eval"][0][0] == pytest.approx(geo.mu(normalization="fisher"), rel=1e-10)
            L0 = float(torch.nn.functional.cross_entropy(model(model.theta0, X), y))
            assert r["train_loss"][0][0] == pytest.approx(L0, rel=1e-12)
        # GD's second record: four full-batch steps from θ₀ (segment 1 of seed 0 is seeded 1; GD draws nothing)
        tr = ng.simulate(model, X, y, model.theta0, eta=0.05, steps=4, loss="cross_entropy")
        theta4 = torch.as_tensor(tr.final_theta[0])
        L4 = float(torch.nn.functional.cross_entropy(model(theta4, X), y))
        assert res["results"][name]["GD"]["train_loss"][0][1] == pytest.approx(L4, rel=1e-10)
        acc = float((model(theta4, X).argmax(1) == y).double().mean())
        assert res["results"][name]["GD"]["train_accuracy"][0][1] == pytest.approx(acc, abs=1e-15)


def test_script_cifar10_and_fashion(tmp_path, capsys):
    _write_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    real_data.main(["cifar10", "--root", str(tmp_path / "cifar"), *TINY, "--models", "CNN", "--optimizers", "SGD",
                    "--out", str(tmp_path / "c")])
    res = _check_results(tmp_path / "c", models=("CNN",), optimizers=("SGD",), n=40, image_shape=(3, 32, 32))
    assert res["data"]["name"] == "CIFAR-10" and res["settings"]["mlp_sizes"] == [3072, 16, 10]
    _write_mnist(tmp_path / "fashion" / "FashionMNIST" / "raw", seed=3)
    real_data.main(["fashion", "--root", str(tmp_path / "fashion"), *TINY, "--models", "MLP", "--optimizers", "GD",
                    "--out", str(tmp_path / "f")])
    res = _check_results(tmp_path / "f", models=("MLP",), optimizers=("GD",), n=40, image_shape=(1, 8, 8))
    assert res["data"]["name"] == "Fashion-MNIST"
    table = capsys.readouterr().out                          # the summary table, one row per run
    assert "mu_F est" in table and "MLP   GD" in table and "CNN   SGD" in table


@pytest.mark.parametrize("labels", ["random", "teacher"])
def test_script_synthetic_runs(tmp_path, labels):
    out = tmp_path / "s"
    real_data.main(["synthetic", "--image-shape", "2", "6", "4", "--labels", labels, *TINY, "--models", "CNN",
                    "--optimizers", "SGD", "--out", str(out)])
    res = _check_results(out, models=("CNN",), optimizers=("SGD",), n=40, image_shape=(2, 6, 4))
    assert res["data"]["labels"] == labels and res["data"]["pixels"] == "N(0, 1)"
    d = real_data.synthetic_images(3000, (1, 4, 5), labels=labels, seed=2)
    assert d["X"].shape == (3000, 20) and d["X"].dtype == torch.float64 and d["y"].dtype == torch.int64
    # N(0, 1) pixels: mean and variance within 5 standard errors of 0 and 1 (60 000 numbers)
    assert abs(float(d["X"].mean())) < 5 / math.sqrt(60000)
    assert abs(float(d["X"].var()) - 1) < 5 * math.sqrt(2 / 60000)
    counts = np.bincount(d["y"].numpy(), minlength=10)
    assert counts.size == 10 and (counts > 0).all()
    assert torch.equal(real_data.synthetic_images(3000, (1, 4, 5), labels=labels, seed=2)["y"], d["y"])


def test_script_device_cuda_without_cuda_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        real_data.main(["synthetic", "--n", "40", "--device", "cuda", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--device cuda: CUDA is not available here" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()                     # refused before anything was written
    parser = real_data.build_parser()
    assert real_data.resolve_device("auto", parser) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert real_data.resolve_device("auto", parser) == torch.device("cuda")


def test_script_missing_data_gives_the_loaders_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"root must be an existing folder, got .*absent"):
        real_data.main(["mnist", "--root", str(tmp_path / "absent"), *TINY])
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte not found; looked for .*Nothing is "
                                                r"downloaded"):
        real_data.main(["fashion", "--root", str(tmp_path), *TINY])
    with pytest.raises(FileNotFoundError, match=r"data_batch_1 not found"):
        real_data.main(["cifar10", "--root", str(tmp_path), *TINY])


@pytest.mark.parametrize("args, message", [
    (["--m", "41"], r"--m must lie in 4..n = 40 \(the training images\), got 41"),
    (["--eval-n", "0"], r"--eval-n must lie in 1..n = 40"),
    (["--batch-size", "50"], r"--batch-size must lie in 1..n = 40"),
    (["--seeds", "0"], r"--seeds must be >= 1, got 0"),
    (["--eta", "-1"], r"--eta must be > 0"),
    (["--record-at", "0", "5", "3", "--steps", "9"], r"--record-at must be non-negative and increasing"),
])
def test_script_bad_settings_are_usage_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        real_data.main(["synthetic", "--image-shape", "1", "4", "4", *TINY, *args, "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_script_digits_subcommand_is_unchanged(tmp_path, monkeypatch):
    args = real_data.build_parser().parse_args(["digits"])
    assert args.command == "digits" and args.seeds == 5 and args.out == real_data.DIGITS_JSON
    assert real_data.DIGITS_JSON.endswith("chapters/data/ch09_digits.json")
    # its path through main with the sweep (10 minutes) replaced by a stand-in that records its call
    calls = []

    def sweep(X, y, *, seeds, progress):
        for name in ("MLP", "CNN"):
            for opt in ("SGD", "GD"):
                for s in seeds:
                    progress(name, opt, s)
        calls.append((tuple(X.shape), list(seeds)))
        return {"MLP": {"SGD": {"mu": np.ones((len(seeds), 4))}, "p": 1210}}

    monkeypatch.setattr(ch9, "digits_sweep", sweep)
    out = tmp_path / "d" / "digits.json"
    real_data.main(["digits", "--seeds", "2", "--out", str(out)])
    res = json.loads(out.read_text())
    assert calls == [((1347, 64), [0, 1])]
    assert res["provenance"]["command"] == f"python scripts/real_data.py digits --seeds 2 --out {out}"
    assert res["provenance"]["device"] == "cpu" and "timings" not in res["provenance"]
    assert res["data"]["n_train"] == 1347 and res["settings"]["seeds"] == [0, 1]
    assert res["results"]["MLP"]["SGD"]["mu"] == [[1.0] * 4] * 2
