

# ---- noisegeom/chapters/ch09_real_data.py (the chapter's numerics)

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import noisegeom as ng
from _fixtures import dense_loss_hessian, loop_ggn, loop_per_sample_gradients
from noisegeom.chapters import ch09_real_data as ch9

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
