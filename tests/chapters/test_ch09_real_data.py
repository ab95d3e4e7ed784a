"""Tests of chapter 9, *Real data*: noisegeom.chapters.ch09_real_data and scripts/real_data.py."""

import gzip
import json
import math
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import noisegeom as ng
import real_data                                  # scripts/ is on the test path (pyproject.toml)
from _fixtures import dense_loss_hessian, loop_ggn, loop_per_sample_gradients
from noisegeom.chapters import ch09_real_data as ch9


# ---- noisegeom/chapters/ch09_real_data.py (the chapter's numerics)

DT = torch.float64
ROOT = Path(__file__).resolve().parents[2]


def _classification(n=40, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, dtype=DT, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return ng.mlp([d, 5, k], seed=seed + 1), X, y


def _dense_sigma_G(model, theta, X, y, loss):
    """Σ₁ and G as p×p matrices from per-sample loops (independent of NoiseGeometry)."""
    grads = loop_per_sample_gradients(model, theta, X, y, loss=loss).numpy()
    gbar = grads.mean(0)
    sigma = grads.T @ grads / grads.shape[0] - np.outer(gbar, gbar)
    return sigma, loop_ggn(model, theta, X, y, loss=loss).numpy()


def test_measure_against_dense_matrices():
    model, X, y = _classification()
    theta = model.theta0 + 0.3 * torch.randn(model.p, dtype=DT, generator=torch.Generator().manual_seed(5))
    k, n_random = 4, 3
    out = ch9.measure(model, theta, X, y, k=k, n_random=n_random, seed=2, tol=1e-12)
    sigma, G = _dense_sigma_G(model, theta, X, y, "cross_entropy")
    H = dense_loss_hessian(model, theta, X, y, loss="cross_entropy").numpy()
    lam_h, V_h = np.linalg.eigh(H)
    lam_h, V_h = lam_h[::-1][:k], V_h[:, ::-1][:, :k]
    np.testing.assert_allclose(out["hess_values"], lam_h, rtol=1e-9, atol=1e-12)
    assert out["hess_residuals"].max() < 1e-8

    def g_of(V):
        return np.einsum("pi,pq,qi->i", V, sigma, V) / np.einsum("pi,pq,qi->i", V, G, V)

    # Fisher normalisation (s = 1) for the cross-entropy; g is quadratic, so eigenvector signs do not matter
    np.testing.assert_allclose(out["g_top"], g_of(V_h), rtol=1e-8)
    assert out["mu"] == pytest.approx(np.trace(sigma @ G) / np.sum(G * G), rel=1e-10)
    p = model.p
    assert out["mu_iso"] == pytest.approx(np.trace(sigma) * np.trace(G) / (p * np.sum(G * G)), rel=1e-10)
    np.testing.assert_allclose(out["g_iso_top"], np.trace(sigma) / p / np.einsum("pi,pq,qi->i", V_h, G, V_h),
                               rtol=1e-8)
    # the same random directions from the same seed
    R = torch.randn(p, n_random, dtype=DT, generator=torch.Generator().manual_seed(2))
    R = (R / torch.linalg.vector_norm(R, dim=0)).numpy()
    np.testing.assert_allclose(out["g_random"], g_of(R), rtol=1e-10)
    lam_g, W = np.linalg.eigh(G)
    keep = np.flatnonzero(lam_g > 1e-6 * lam_g[-1])[:k]
    np.testing.assert_allclose(out["G_bottom"], lam_g[keep], rtol=1e-7, atol=1e-14)
    np.testing.assert_allclose(out["g_bottom"], g_of(W[:, keep]), rtol=1e-6)
    np.testing.assert_allclose(out["G_top"], lam_g[::-1][:k], rtol=1e-10)
    with torch.no_grad():
        probs = torch.softmax(model(theta, X), 1)
    assert out["accuracy"] == pytest.approx(float((probs.argmax(1) == y).double().mean()))
    assert out["label_prob_min"] == pytest.approx(float(probs[torch.arange(len(y)), y].min()), rel=1e-12)


def test_measure_square_loss_uses_the_loss_normalisation():
    model, X, y = _classification(k=2, seed=3)
    Y = torch.nn.functional.one_hot(y, 2).double()
    out = ch9.measure(model, model.theta0, X, Y, loss="mse", k=2, n_random=2)
    sigma, G = _dense_sigma_G(model, model.theta0, X, Y, "mse")
    two_L = 2 * ng.loss_value(model, model.theta0, X, Y)
    assert out["mu"] == pytest.approx(np.trace(sigma @ G) / (two_L * np.sum(G * G)), rel=1e-10)
    assert np.isnan(out["accuracy"]) and np.isnan(out["label_prob_min"])
    assert ch9.normalization_of("mse") == "loss" and ch9.normalization_of("cross_entropy") == "fisher"
    with pytest.raises(ValueError, match="loss must be one of"):
        ch9.normalization_of("hinge")
    with pytest.raises(TypeError, match="model must be a noisegeom FlatModel"):
        ch9.measure(model.module, model.theta0, X, y)
    with pytest.raises(ValueError, match="k must be"):
        ch9.measure(model, model.theta0, X, y, k=0)


@pytest.mark.parametrize("seed", [0, 4, 9])
def test_the_ceiling_on_real_labels(seed):
    """Proposition prop-ch9-ceiling: g_F(v) ≤ 1/π_min for every v, and μ_F ≤ 1/π_min, for any labels;
    with labels the model finds unlikely (its least likely class) the bound is far from empty."""
    model, X, y = _classification(n=25, seed=seed)
    theta = model.theta0 * 3
    with torch.no_grad():
        probs = torch.softmax(model(theta, X), 1)
    for labels in (y, probs.argmin(1)):
        sigma, G = _dense_sigma_G(model, theta, X, labels, "cross_entropy")
        pi_min = float(probs[torch.arange(len(labels)), labels].min())
        lam, W = np.linalg.eigh(G)
        V = np.concatenate([W[:, lam > 1e-10 * lam[-1]],
                            np.random.default_rng(seed).standard_normal((model.p, 20))], axis=1)
        g = np.einsum("pi,pq,qi->i", V, sigma, V) / np.einsum("pi,pq,qi->i", V, G, V)
        assert g.max() * pi_min <= 1 + 1e-10
        assert np.trace(sigma @ G) / np.sum(G * G) * pi_min <= 1 + 1e-10
    # power: against the least likely labels the noise exceeds the Fisher reference along some direction
    assert g.max() > 1


def test_alignment_through_training_is_measure_along_the_run():
    model, X, y = _classification(seed=6)
    rec = ch9.alignment_through_training(model, X, y, model.theta0, eta=0.5, record_at=[0, 3, 5], batch_size=8,
                                         k=2, n_random=2, seed=4)
    assert rec["steps"].tolist() == [0, 3, 5] and rec["g_top"].shape == (3, 2)
    thetas = ng.measure_along_run(model, X, y, model.theta0, eta=0.5, record_at=[0, 3, 5], batch_size=8, seed=4,
                                  loss="cross_entropy", measure=lambda th: th)[1]
    for r, th in enumerate(thetas):
        direct = ch9.measure(model, th, X, y, k=2, n_random=2, seed=4)
        for key, value in direct.items():
            np.testing.assert_allclose(rec[key][r], value, rtol=1e-12, atol=0, err_msg=key)
    # GD is another run
    gd = ch9.alignment_through_training(model, X, y, model.theta0, eta=0.5, record_at=[0, 5], k=2, n_random=2,
                                        seed=4)
    assert gd["loss"][0] == rec["loss"][0] and gd["loss"][1] != rec["loss"][2]


def test_digits_sweep_runs_and_refuses_unknown_settings():
    digits = ng.load_digits(seed=0)
    X, y = digits["X_train"][:30], digits["y_train"][:30]
    out = ch9.digits_sweep(X, y, seeds=[0, 1], models=["MLP"], optimizers=["GD"], record_at=(0, 2), k=2,
                           n_random=2)
    assert out["MLP"]["p"] == ch9.digits_models(0)["MLP"].p == 64 * 16 + 16 + 16 * 10 + 10
    assert out["MLP"]["GD"]["mu"].shape == (2, 2) and out["MLP"]["GD"]["g_top"].shape == (2, 2, 2)
    one = ch9.alignment_through_training(ch9.digits_models(1)["MLP"], X, y, ch9.digits_models(1)["MLP"].theta0,
                                         eta=ch9.DIGITS_RUN["eta"], record_at=[0, 2], k=2, n_random=2, seed=1)
    np.testing.assert_array_equal(out["MLP"]["GD"]["mu"][1], one["mu"])
    with pytest.raises(TypeError, match="unknown settings"):
        ch9.digits_sweep(X, y, seeds=[0], learning_rate=0.1)
    with pytest.raises(ValueError, match="optimizers"):
        ch9.digits_sweep(X, y, seeds=[0], optimizers=["Adam"])


def test_the_stored_digits_sweep_is_what_the_code_gives():
    """chapters/data/ch09_digits.json (scripts/real_data.py digits): one run recomputed, the rest checked
    for shape and provenance (the chapter recomputes another run)."""
    stored = json.loads((ROOT / "chapters" / "data" / "ch09_digits.json").read_text())
    assert stored["provenance"]["command"].startswith("python scripts/real_data.py digits")
    settings = stored["settings"]
    assert {k: settings[k] for k in ch9.DIGITS_RUN} == {k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in ch9.DIGITS_RUN.items()}
    digits = ng.load_digits(seed=0)
    X, y = digits["X_train"], digits["y_train"]
    model = ch9.digits_models(1)["MLP"]
    rec = ch9.alignment_through_training(model, X, y, model.theta0, eta=settings["eta"],
                                         record_at=settings["record_at"], k=settings["k"],
                                         n_random=settings["n_random"], seed=1)
    file_run = stored["results"]["MLP"]["GD"]
    for key in ("loss", "mu", "mu_iso", "hess_values", "g_top", "g_random", "g_bottom", "label_prob_min"):
        np.testing.assert_allclose(np.asarray(file_run[key], dtype=float)[1], rec[key], rtol=1e-7, atol=1e-12,
                                   err_msg=key)
    for name in ("MLP", "CNN"):
        for opt in ("SGD", "GD"):
            assert np.asarray(stored["results"][name][opt]["mu"]).shape == (len(settings["seeds"]),
                                                                           len(settings["record_at"]))


def _escape_problem():
    digits = ng.load_digits(seed=0)
    X, y = digits["X_train"][:12], digits["y_train"][:12]
    Y = torch.nn.functional.one_hot(y, 10).double()
    model = ng.mlp([64, 8, 10], seed=2)                     # p = 610 > n·k = 120: it interpolates
    star = ng.find_minimum(model, X, Y, model.theta0, eta=0.05, steps=300, polish_steps=10)
    return model, X, Y, star


def test_find_minimum_interpolates_ten_outputs():
    model, X, Y, star = _escape_problem()
    assert ng.loss_value(model, star, X, Y) < 1e-20


def test_escape_from_minimum_splits_the_displacement_on_the_hessian_eigenvectors():
    model, X, Y, star = _escape_problem()
    H = dense_loss_hessian(model, star, X, Y).numpy()
    lam, V = np.linalg.eigh(H)
    U = V[:, ::-1][:, :3]
    eta = 1.0 / lam[-1]
    out = ch9.escape_from_minimum(model, X, Y, star, eta=eta, steps=20, batch_size=2, n_seeds=3, seed=3,
                                  record_every=5, sharpness_every=10, directions=U)
    # the same run by simulate: θ_t recorded, the split computed by hand
    gen = torch.Generator().manual_seed(3)
    starts = star + 1e-6 * torch.randn(3, model.p, dtype=DT, generator=gen)
    tr = ng.simulate(model, X, Y, starts, eta=eta, steps=20, batch_size=2, n_seeds=3, seed=3, record_every=5,
                     record_theta=True)
    D = tr.theta - star.numpy()
    d2 = (D ** 2).sum(-1)
    np.testing.assert_allclose(out["distance"], np.sqrt(d2), rtol=1e-12)
    np.testing.assert_allclose(out["top"], (D @ U) ** 2 / d2[..., None], rtol=1e-9)
    np.testing.assert_allclose(out["rest"], 1 - ((D @ U) ** 2).sum(-1) / d2, rtol=1e-7, atol=1e-12)
    assert out["sharpness_steps"].tolist() == [0, 10, 20]
    for i, r in enumerate([0, 2, 4]):
        for j in range(3):
            Ht = dense_loss_hessian(model, torch.as_tensor(tr.theta[r, j]), X, Y).numpy()
            assert out["sharpness"][i, j] == pytest.approx(np.linalg.eigvalsh(Ht)[-1], rel=1e-8)
    # the Lanczos directions when none are given: the top-k Hessian eigenvalues at θ⋆
    own = ch9.escape_from_minimum(model, X, Y, star, eta=eta, steps=5, k=3, seed=3, record_every=5)
    np.testing.assert_allclose(own["hess_values"], lam[::-1][:3], rtol=1e-8)
    with pytest.raises(ValueError, match="sharpness_every must be a multiple"):
        ch9.escape_from_minimum(model, X, Y, star, eta=eta, steps=10, directions=U, record_every=5, sharpness_every=7)
    with pytest.raises(ValueError, match="start_noise"):
        ch9.escape_from_minimum(model, X, Y, star, eta=eta, steps=10, directions=U, start_noise=0)


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


def test_script_figures_leave_the_callers_matplotlib_settings(tmp_path):
    """The script draws in the book's style inside an rc_context: a test or notebook that runs it
    in-process keeps its own settings (the book style's savefig.dpi = 100 once leaked into
    tests/toolbox/test_widgets.py)."""
    import matplotlib as mpl

    before = dict(mpl.rcParams)
    _write_mnist(tmp_path / "mnist")
    real_data.main(["mnist", "--root", str(tmp_path / "mnist"), "--out", str(tmp_path / "out"), *TINY])
    assert (tmp_path / "out" / "alignment.png").read_bytes().startswith(PNG)
    changed = {k for k in before if mpl.rcParams[k] != before[k]} - {"backend"}
    assert not changed, sorted(changed)
