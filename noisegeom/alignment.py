"""The alignment metrics of SGD noise with curvature, through n×n Gram matrices.

Definitions (chapter 3; Wang & Wu, arXiv:2310.00692, for μ and g):

* average alignment  μ(θ) = Tr(Σ₁ G) / (2L ‖G‖_F²);
* directional alignment  g(θ; v) = vᵀΣ₁v / (2L · vᵀGv);
* subspace alignment (this book's extension)  g(θ; V) = Tr(VᵀΣ₁V) / (2L · Tr(VᵀGV));
* isotropic baseline at matched trace  μ_iso = Tr(Σ₁) Tr(G) / (p · 2L ‖G‖_F²);
* the indicator of Zhu et al. (2019)  Tr(Σ₁G) / (Tr G · Tr Σ₁ / p) = μ / μ_iso.

Perfect alignment Σ₁ = 2L·G gives μ = g = 1.

None of these needs a p×p matrix. With per-sample gradients g_i (rows of
``grads``, n×p) and a Gauss–Newton factor A (G = AᵀA/n; A = J for the
square loss),

    Tr(Σ₁G) = ‖A Gradsᵀ‖_F² / n² − ‖A ḡ‖² / n,   ‖G‖_F² = ‖A Aᵀ‖_F² / n²,

which for the square loss is the book's (chapter 3)
μ = [n Σ_i e_i² (K²)_ii − eᵀK²e] / [‖e‖² ‖K‖_F²], K = JJᵀ. The cost is
O(n² p) for the Gram products and O(n p k) for k directions. For networks of linear
layers (:func:`~noisegeom.factored_jacobian`) K costs O(n² Σ_l (d_in + d_out)) and J is
never formed; only the blocks of K on and above the diagonal are computed, and K itself is
not stored.

Devices: a geometry lives on the device of its data (the factor and gradients, or X in
:meth:`~noisegeom.NoiseGeometry.from_model`, or the module in :meth:`~noisegeom.NoiseGeometry.from_module`), CUDA
included. Every Gram, product and eigendecomposition runs there; directions passed in are
moved there. The scalar metrics come back as Python floats, ``g`` of several directions and
:meth:`~noisegeom.NoiseGeometry.top_eigenpairs` as numpy arrays on the host (as on the CPU). On the CPU the
Gram matrices use BLAS ``syrk`` through scipy; elsewhere a torch product, mirrored to be exactly
symmetric. Products with a scipy ``LinearOperator`` curvature go through the host.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg.blas import dsyrk
from scipy.sparse.linalg import LinearOperator

from ._checks import (as_tensor, check_finite_result, check_int, check_loss_positive, device_of, follow_device,
                      on_accelerator)
from .autodiff import _check_inputs, ggn_factor, jacobian, loss_value, per_sample_gradients, residuals
from .curvature import Eigenpairs, _fix_signs, gauss_newton_operator
from .factored import FactoredJacobian, NotFactorableError, factored_jacobian
from .noise import noise_covariance_operator

__all__ = [
    "NoiseGeometry",
    "average_alignment",
    "directional_alignment",
    "subspace_alignment",
    "isotropic_alignment",
]

# Largest p for which mu(curvature=H) computes ‖H‖_F² exactly with p products.
_EXACT_FROBENIUS_MAX_P = 4096


def _gram(a: torch.Tensor) -> torch.Tensor:
    """A Aᵀ (m×m) of a float64 m×p tensor, exactly symmetric.

    BLAS syrk computes one triangle of A Aᵀ, m²p flops instead of the 2m²p of a general
    product: it runs on the zero-copy Fortran view Aᵀ (p×m) of a row-major A, with
    trans=1 giving (Aᵀ)ᵀAᵀ = AAᵀ in the upper triangle, which is then mirrored. Off the CPU
    (no syrk in torch) a full product on the device, its upper triangle mirrored the same way.
    """
    if on_accelerator(a.device):
        up = torch.triu(a @ a.T)
        return up + torch.triu(up, 1).T
    up = dsyrk(1.0, np.asfortranarray(a.numpy().T), trans=1)
    return torch.from_numpy(up + np.triu(up, 1).T)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a, b⟩ = Σ a_ij b_ij in one pass."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _finite(value, what: str):
    # the metrics divide Gram products that grow like the fourth power of the data's scale
    return check_finite_result(value, what, "the entries of X and y, or of J and e,")


def _sum_squares(a: torch.Tensor) -> torch.Tensor:
    """‖a‖_F² in one pass, without an n×p temporary."""
    flat = a.reshape(-1)
    return torch.dot(flat, flat)


class NoiseGeometry:
    """SGD noise Σ₁ and curvature G at one point θ, held as n×p factors.

    Parameters
    ----------
    grads : array, shape (n, p)
        Per-sample loss gradients g_i (g_i = e_i ∇f_i for the square loss).
    factor : array, shape (n·k, p)
        A with G = AᵀA / n; J for the scalar square loss.
    loss : float
        L(θ) = (1/n) Σ ℓ_i > 0; the metrics normalise by 2L.

    Attributes
    ----------
    device : torch.device
        Where the factors live and the metrics are computed: the device of ``grads`` (the
        factor is moved there), of J in :meth:`square_loss`, of X in :meth:`from_model`, of
        the module in :meth:`from_module`.

    Notes
    -----
    Build it with :meth:`square_loss` from (J, e) or with :meth:`from_model`.
    All metrics use n×n (or nk×nk) Gram matrices; see the module docstring.
    Everything is computed on first use and kept: the object describes one point θ.
    Chapter 3 derives the identities; tests/toolbox/test_alignment.py checks them
    against dense p×p computations.
    """

    def __init__(self, grads, factor, loss: float):
        grads = as_tensor(grads, "grads", ndim=2)
        self._setup(grads, as_tensor(factor, "factor", ndim=2, device=grads.device), loss)

    def _setup(self, grads: torch.Tensor | None, factor, loss: float,
               e: torch.Tensor | None = None):
        # grads and factor are checked float64 tensors here (no second pass over n×p arrays),
        # or factor is a FactoredJacobian (scalar square loss, J never written out).
        # Square loss: grads = None and e given; grads = diag(e) J is formed only if asked for.
        self._grads = grads
        self._factored = factor if isinstance(factor, FactoredJacobian) else None
        self._factor = None if self._factored is not None else factor
        self.device = factor.device
        n, p = factor.shape if grads is None else grads.shape
        if n == 0 or p == 0:
            raise ValueError(f"grads and factor (J) must have at least one row and one column, got shape {(n, p)}")
        if factor.shape[1] != p:
            raise ValueError(f"factor must have p = {p} columns like grads, got shape {tuple(factor.shape)}")
        if factor.shape[0] % n:
            raise ValueError(f"factor must have a multiple of n = {n} rows, got {factor.shape[0]}")
        if n < 2:
            raise ValueError(f"need n >= 2 samples (rows of X, or of grads and J): with n = {n} the noise "
                             f"covariance Σ₁ is zero and the alignment metrics are 0/0")
        loss = float(loss)
        check_loss_positive(loss)
        self.n, self.p, self.loss = n, p, loss
        self._gbar = None
        self._AG = None
        self._K = None
        self._sweep_cache = None
        self._K2cols = None
        self._trSG = None
        self._Ke_cache = None
        self._M = None
        # residuals e when grads = diag(e) A (scalar square loss): then A Gradsᵀ = K diag(e)
        self._e = e
        # which side the products run on: p×p (AᵀA, n·k·p² flops) when p < n·k, else the
        # n·k×n·k Gram (AAᵀ, (n·k)²·p flops); a factored J always uses its cheap Gram sweep
        self.side = "parameters" if self._factored is None and p < factor.shape[0] else "samples"

    # ----- constructors -------------------------------------------------
    @classmethod
    def square_loss(cls, J, e) -> "NoiseGeometry":
        """From the Jacobian J (n×p, a tensor or a :class:`~noisegeom.FactoredJacobian`) and
        residuals e (n,) of a scalar model, on the device of J (e is moved there)."""
        if not isinstance(J, FactoredJacobian):
            J = as_tensor(J, "J", ndim=2)
        e = as_tensor(e, "e", ndim=1, device=J.device)
        if e.shape[0] != J.shape[0]:
            raise ValueError(f"e must have one entry per row of J ({J.shape[0]}), got {e.shape[0]}")
        geo = cls.__new__(cls)
        geo._setup(None, J, 0.5 * float((e * e).mean()), e)
        return geo

    @classmethod
    def from_model(cls, model, theta, X, y, *, loss: str = "mse", chunk_size: int | None = None,
                   route: str = "auto"):
        """Compute per-sample gradients and the (generalized) Gauss–Newton factor of a model.

        For a scalar model with the square loss one Jacobian pass gives both: g_i = e_i ∇f_i.

        Parameters
        ----------
        model : FlatModel
        theta, X, y : arrays
            The point θ and the data.
        loss : {'mse', 'cross_entropy'}
        chunk_size : int, optional
            Samples per vmapped chunk of the Jacobian route.
        route : {'auto', 'factored', 'jacobian', 'parameters'}
            How J is held and which side the products run on. 'factored': J per linear
            layer, never written out (:func:`noisegeom.factored_jacobian`; scalar networks of
            linear layers with the square loss), so K = JJᵀ costs O(n² Σ_l (d_in + d_out))
            instead of O(n² p). 'jacobian': J (or the factor A, n·k rows) from ``vmap`` (any
            model) and the n·k×n·k Gram AAᵀ, (n·k)²p flops. 'parameters': the same A and the
            p×p matrix AᵀA, n·k·p² flops. 'auto' (default): 'parameters' when p < n·k, else
            'factored' where the model allows it, else 'jacobian'. The attributes ``route``
            and ``side`` ('parameters' or 'samples') say which was used.

        Notes
        -----
        Everything runs on the device of X (the model must be there too; θ and y are
        moved there): on CUDA the Jacobian, the Gram matrices and the metrics are computed on
        the GPU, and only the scalar results come to the host.
        """
        if route not in ("auto", "factored", "jacobian", "parameters"):
            raise ValueError(f"route must be 'auto', 'factored', 'jacobian' or 'parameters', got {route!r}")
        if chunk_size is not None:              # checked here: the factored route does not chunk
            check_int(chunk_size, "chunk_size", low=1)
        if route == "factored" and loss != "mse":
            raise ValueError("route='factored' needs loss='mse' (a scalar model with the square loss)")
        dev = device_of(X)
        theta, X, y = _check_inputs(model, follow_device(theta, dev), X, follow_device(y, dev), loss)
        # p < n already means p < n·k: the p×p side is cheaper than any Gram, factored or not
        prefer_parameters = route == "auto" and model.p < X.shape[0]
        if loss == "mse" and route in ("auto", "factored") and not prefer_parameters:
            try:
                fj = factored_jacobian(model, theta, X)
            except NotFactorableError as exc:
                if route == "factored":
                    raise NotFactorableError(f"route='factored' does not apply to this model: {exc}") from exc
            else:
                geo = cls.square_loss(fj, fj.outputs - y)
                geo.route = "factored"
                return geo
        if loss == "mse":
            J = jacobian(model, theta, X, chunk_size=chunk_size)
            if J.ndim == 2:
                return cls._sided(cls.square_loss(J, residuals(model, theta, X, y)), route)
            A = J.reshape(-1, J.shape[-1])          # k outputs: Λ_i = I, A stacks the rows of J_i
        else:
            A = ggn_factor(model, theta, X, y, loss=loss, chunk_size=chunk_size)
        grads = per_sample_gradients(model, theta, X, y, loss=loss, chunk_size=chunk_size)
        return cls._sided(cls(grads, A, loss_value(model, theta, X, y, loss=loss)), route)

    @staticmethod
    def _sided(geo: "NoiseGeometry", route: str) -> "NoiseGeometry":
        # a dense factor: 'auto' keeps the cheaper side chosen in _setup, the others force one
        if route == "parameters":
            geo.side = "parameters"
        elif route == "jacobian":
            geo.side = "samples"
        geo.route = "parameters" if geo.side == "parameters" else "jacobian"
        return geo

    @classmethod
    def from_module(cls, module, X, y, *, loss="mse", route: str = "auto",
                    chunk_size: int | None = None) -> "NoiseGeometry":
        """The noise geometry of a plain ``torch.nn.Module`` at its current parameters.

        θ is every parameter of ``module`` with ``requires_grad``, in the module's
        ``named_parameters`` order (p = their total size). The module is never changed: the
        computation runs in float64 on a copy on the module's own device (CUDA included), so
        the caller's parameters, buffers, dtype and training loop are untouched. Call it
        again after training steps: it always reads the current parameters.

        Parameters
        ----------
        module : torch.nn.Module
            Any module mapping a batch X (n, ...) to outputs (n,), (n, 1) or (n, k). A
            module in training mode with batch normalisation, dropout or another layer whose
            output couples the samples or is random is refused (call ``module.eval()``), and so
            is one whose output for a sample changes with the rest of the batch.
        X : array or tensor, shape (n, ...)
            The samples (any floating dtype, any device: they are moved to the module's).
        y : array or tensor
            Targets of shape (n,) or (n, 1) for a scalar model, (n, k) for k outputs with the
            square loss; class labels 0, …, k−1 of shape (n,) for the cross-entropy.
        loss : {'mse', 'cross_entropy'} or torch.nn.MSELoss / torch.nn.CrossEntropyLoss
            ℓ_i = ½‖f(x_i) − y_i‖² or the cross-entropy of sample i (see
            :func:`~noisegeom.autodiff.loss_name`); L = (1/n) Σ ℓ_i.
        route, chunk_size
            As in :meth:`from_model`.

        Returns
        -------
        NoiseGeometry
            Computed in float64 on the module's device (that of its first parameter); its
            ``device`` attribute says which. Metrics come back as Python floats.

        Examples
        --------
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> X, y = torch.randn(50, 3), torch.randn(50, 1)
        >>> geo = NoiseGeometry.from_module(net, X, y, loss=torch.nn.MSELoss())
        >>> geo.p
        41
        """
        import copy

        from .autodiff import loss_name
        from .models import FlatModel, check_per_sample, probe_per_sample

        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        loss = loss_name(loss)
        # before the copy, so that a refused module is not copied: batch statistics, dropout
        check_per_sample(module)
        # where the module computes: its parameters' device (a module without any is refused by FlatModel)
        dev = next((q.device for q in module.parameters()), torch.device("cpu"))
        # a float64 copy on that device: FlatModel converts the module it wraps, and that must not be the caller's
        model = FlatModel(copy.deepcopy(module).to(device=dev, dtype=torch.float64))
        theta = model.theta0
        _, X, _ = _check_inputs(model, theta, as_tensor(X, "X", device=dev))     # X fits the model
        reason = probe_per_sample(model, theta, X)
        if reason:
            raise ValueError(f"module: {reason}; call module.eval() if it has layers that behave so in training")
        # targets on the module's device; their shape and labels are checked against the outputs in from_model
        y = torch.as_tensor(y).detach().to(dev) if loss == "cross_entropy" else as_tensor(y, "y", device=dev)
        return cls.from_model(model, theta, X, y, loss=loss, route=route, chunk_size=chunk_size)

    route = "jacobian"

    # ----- Gram quantities ----------------------------------------------
    @property
    def gbar(self) -> torch.Tensor:
        """The full-batch gradient ∇L = (1/n) Σ g_i, shape (p,) (formed on first use)."""
        if self._gbar is None:
            if self._grads is not None:
                self._gbar = self._grads.mean(0)
            else:
                self._gbar = self._factor_T_times(self._e[:, None])[:, 0] / self.n
        return self._gbar

    @property
    def factor(self) -> torch.Tensor:
        """The factor A (G = AᵀA/n) as a tensor of shape (n·k, p); J for the scalar square loss.

        Built with ``route='factored'`` it is written out on first use (n·p numbers);
        :meth:`factor_times` and :attr:`K` do not need it.
        """
        if self._factor is None:
            self._factor = self._factored.dense()
        return self._factor

    def factor_times(self, V) -> torch.Tensor:
        """A V for V of shape (p, k), shape (n·k', k); J V for the scalar square loss (on the geometry's device)."""
        V = torch.as_tensor(V, dtype=torch.float64, device=self.device)
        if self._factor is None:
            return self._factored @ V
        return self._factor @ V

    @property
    def grads(self) -> torch.Tensor:
        """Per-sample gradients as rows, shape (n, p) (for the square loss e_i ∇f_i, formed on first use)."""
        if self._grads is None:
            self._grads = self._e[:, None] * self.factor
        return self._grads

    @property
    def AG(self) -> torch.Tensor:
        """A Gradsᵀ, shape (nk, n)."""
        if self._AG is None:
            # square loss: A Gradsᵀ = J Jᵀ diag(e) = K diag(e), no second n×n×p product
            self._AG = self.K * self._e[None, :] if self._e is not None else self.factor @ self.grads.T
        return self._AG

    @property
    def K(self) -> torch.Tensor:
        """The Gram matrix A Aᵀ, shape (nk, nk); for the square loss the empirical NTK Gram J Jᵀ."""
        if self._K is None:
            self._K = self._factored.gram() if self._factored is not None else _gram(self._factor)
        return self._K

    @property
    def M(self) -> torch.Tensor:
        """AᵀA, shape (p, p), so that G = AᵀA/n (formed on first use; the route when p < n·k)."""
        if self._M is None:
            self._M = _gram(self.factor.T)
        return self._M

    def _use_sweep(self) -> bool:
        # factored J and no K at hand: what the metrics need of K comes from one sweep over its
        # upper blocks (FactoredJacobian._gram_sweep), K itself is never stored
        return self._K is None and self._factored is not None

    def _K_ready(self) -> bool:
        # diag K is at hand, or cheaper than a pass over J (factored: FactoredJacobian.row_norms2)
        return self._K is not None or self._factored is not None

    def _Ke_at_hand(self) -> bool:
        # K e costs n² once K or the sweep is done; otherwise ∇L = Jᵀe/n (2np flops) is cheaper
        return self._Ke_cache is not None or self._K is not None or self._sweep_cache is not None

    @property
    def _sweep(self):
        if self._sweep_cache is None:
            self._sweep_cache = self._factored._gram_sweep(self._e)
        return self._sweep_cache

    def _K_diag(self) -> torch.Tensor:
        if self._K is not None:
            return torch.diagonal(self._K)
        if self._sweep_cache is not None:
            return self._sweep_cache[0]
        return self._factored.row_norms2()               # O(n Σ_l (d_in + d_out)), no Gram needed

    @property
    def _K2_cols(self) -> torch.Tensor:
        # column sums of K⊙K: Σ_j of them is ‖K‖_F², their e²-weighted sum is ‖K diag(e)‖_F²
        if self._K2cols is None:
            self._K2cols = self._sweep[2] if self._use_sweep() else (self.K * self.K).sum(0)
        return self._K2cols

    @property
    def _Ke(self) -> torch.Tensor:
        # K e = J ∇L · n for the square loss; shared by Tr Σ₁ and Tr(Σ₁G)
        if self._Ke_cache is None:
            self._Ke_cache = self._sweep[1] if self._use_sweep() else self.K @ self._e
        return self._Ke_cache

    def trace_sigma1(self) -> float:
        """Tr Σ₁ = (1/n) Σ‖g_i‖² − ‖∇L‖²."""
        if self._e is not None:                                     # ‖g_i‖² = e_i² ‖∇f_i‖² = e_i² K_ii
            rows = (self._K_diag() if self._K_ready()
                    else torch.linalg.vector_norm(self._factor, dim=1) ** 2)
            sq = (self._e ** 2 * rows).sum()
            if self._gbar is None and self._Ke_at_hand():            # ‖∇L‖² = eᵀKe / n²
                return float(sq / self.n - self._e @ self._Ke / self.n ** 2)
        else:
            sq = _sum_squares(self.grads)
        return float(sq / self.n - self.gbar @ self.gbar)

    def trace_G(self) -> float:
        """Tr G = ‖A‖_F² / n."""
        sq = self._K_diag().sum() if self._K_ready() else _sum_squares(self._factor)
        return float(sq / self.n)

    def frobenius2_G(self) -> float:
        """‖G‖_F² = ‖AAᵀ‖_F² / n² = ‖AᵀA‖_F² / n²."""
        if self.side == "parameters":
            return float(_sum_squares(self.M) / self.n ** 2)
        if self._e is not None:
            return float(self._K2_cols.sum() / self.n ** 2)
        return float((self.K ** 2).sum() / self.n ** 2)

    def trace_sigma1_G(self) -> float:
        """Tr(Σ₁ G) = ‖A Gradsᵀ‖_F²/n² − ‖Aḡ‖²/n."""
        if self._trSG is None and self.side == "parameters":
            # Tr(Σ₁G) = ⟨Grads M, Grads⟩/n² − ḡᵀMḡ/n with M = AᵀA (p×p)
            GM = self.grads @ self.M
            gbar = self.gbar
            self._trSG = float(_inner(GM, self.grads) / self.n ** 2 - gbar @ (self.M @ gbar) / self.n)
        if self._trSG is None:
            if self._e is not None:
                # square loss: A Gradsᵀ = K diag(e), so ‖A Gradsᵀ‖_F² = Σ_j e_j² Σ_i K_ij² and Aḡ = Ke/n
                Agbar = self._Ke / self.n
                self._trSG = float(self._K2_cols @ self._e ** 2 / self.n ** 2 - Agbar @ Agbar / self.n)
            else:
                Agbar = self.AG.mean(1)
                self._trSG = float((self.AG ** 2).sum() / self.n ** 2 - Agbar @ Agbar / self.n)
        return self._trSG

    # ----- metrics ------------------------------------------------------
    def _scale(self, normalization: str) -> float:
        if normalization == "loss":
            return 2 * self.loss
        if normalization == "fisher":
            return 1.0
        raise ValueError(f"normalization must be 'loss' or 'fisher', got {normalization!r}")

    def mu(self, curvature: LinearOperator | None = None, *, frobenius2: float | None = None,
           normalization: str = "loss") -> float:
        """Average alignment μ = Tr(Σ₁C) / (2L ‖C‖_F²) with C = G (default) or C = H.

        Noise exactly aligned with the curvature, Σ₁ = 2L·G, gives μ = 1: the square loss's
        scale, where 2L is the mean squared residual. For the cross-entropy 2L is not the
        scale of the noise; ``normalization='fisher'`` gives μ_F = Tr(Σ₁G)/‖G‖_F², whose
        reference is the model's own labels: for labels drawn from its predictive distribution
        G is the Fisher matrix, E Σ₁ = (1 − 1/n) G and E μ_F = 1 − 1/n. μ_F < 1 means less
        noise along the curvature than the model's own predictions would make; for any labels
        μ_F ≤ 1/min_i p_{i,y_i} (chapter 9), and a network that fits its training labels has
        μ_F far below one, while μ (divided by 2L) grows, more slowly than 1/L. The shape of
        the noise, μ/μ_iso, does not depend on the normalisation.

        Parameters
        ----------
        curvature : LinearOperator, optional
            Use this symmetric operator (e.g. :func:`noisegeom.hessian_operator`)
            instead of G. Tr(Σ₁H) costs n+1 products.
        frobenius2 : float, optional
            ‖C‖_F² when ``curvature`` is given. If omitted it is computed exactly
            with p products, allowed for p ≤ 4096; pass a Hutchinson estimate
            (:func:`noisegeom.hutchinson`) for larger p.
        normalization : {'loss', 'fisher'}
            Divide by 2L (default, the book's μ) or not (μ_F, for the cross-entropy).
        """
        scale = self._scale(normalization)
        if curvature is None:
            fro = _finite(self.frobenius2_G(), "‖G‖_F²")
            if fro == 0:
                raise ValueError("G = 0 (the factor, J for the square loss, is zero: every per-sample Jacobian vanishes): "
                                 "μ is undefined")
            return _finite(self.trace_sigma1_G() / (scale * fro), "μ")
        op = self._check_operator(curvature)
        # the operator works in numpy on the host (its products go to its own device and back)
        cols = np.concatenate([self.grads.T.cpu().numpy(), self.gbar.cpu().numpy()[:, None]], axis=1)
        HC = op @ cols
        tr = float((cols[:, :-1] * HC[:, :-1]).sum() / self.n - cols[:, -1] @ HC[:, -1])
        if frobenius2 is None:
            if self.p > _EXACT_FROBENIUS_MAX_P:
                raise ValueError(
                    f"frobenius2 is required for p = {self.p} > {_EXACT_FROBENIUS_MAX_P}: "
                    "pass an estimate, e.g. hutchinson(H, quantity='frobenius2')[0]")
            eye = np.eye(self.p)
            frobenius2 = float(sum(((op @ eye[:, j:j + 256]) ** 2).sum() for j in range(0, self.p, 256)))
        if not frobenius2 > 0:
            raise ValueError(f"frobenius2 must be > 0, got {frobenius2}")
        return _finite(tr / (scale * float(frobenius2)), "μ")

    def mu_isotropic(self, *, normalization: str = "loss") -> float:
        """μ of isotropic noise with the same trace: Tr(Σ₁) Tr(G) / (p · 2L ‖G‖_F²).

        ``normalization='fisher'`` drops the 2L, as in :meth:`mu`.
        """
        scale = self._scale(normalization)
        fro = _finite(self.frobenius2_G(), "‖G‖_F²")
        if fro == 0:
            raise ValueError("G = 0 (the factor, J for the square loss, is zero): the isotropic baseline is undefined")
        return _finite(self.trace_sigma1() * self.trace_G() / (self.p * scale * fro), "μ_iso")

    def zhu_indicator(self) -> float:
        """Tr(Σ₁G) / (Tr G · Tr Σ₁ / p), the indicator of Zhu et al. (2019); equals μ/μ_iso."""
        denom = self.trace_G() * self.trace_sigma1()
        if denom == 0:
            raise ValueError("Tr G · Tr Σ₁ = 0: the indicator is 0/0")
        return self.p * self.trace_sigma1_G() / denom

    def _check_operator(self, op) -> LinearOperator:
        if not isinstance(op, LinearOperator):
            raise TypeError(f"curvature must be a scipy LinearOperator, got {type(op).__name__}")
        if op.shape != (self.p, self.p):
            raise ValueError(f"curvature must have shape ({self.p}, {self.p}), got {op.shape}")
        return op

    def _directions(self, v, name: str) -> torch.Tensor:
        V = as_tensor(v, name, ndim=(1, 2), device=self.device)
        V = V[:, None] if V.ndim == 1 else V
        if V.shape[0] != self.p:
            raise ValueError(f"{name} must have p = {self.p} rows, got shape {tuple(V.shape)}")
        norms = (V ** 2).sum(0)
        if (norms == 0).any():
            j = int(torch.nonzero(norms == 0)[0])
            raise ValueError(f"{name} column {j} is the zero vector")
        return V

    def _quadratic_forms(self, V: torch.Tensor, curvature, name: str):
        # square loss: grads V = diag(e) (J V), one pass over the n×p arrays instead of two
        AV = self.factor_times(V) if (curvature is None or self._e is not None) else None
        GV = self._e[:, None] * AV if self._e is not None else self.grads @ V
        # ḡᵀV = eᵀ(JV)/n for the square loss, from the product already formed
        gV = self._e @ AV / self.n if self._e is not None and self._gbar is None else self.gbar @ V
        num = (GV ** 2).sum(0) / self.n - gV ** 2
        if curvature is None:
            den = (AV ** 2).sum(0) / self.n
            # Tr G ≥ ‖G‖₂ sets the scale of "vᵀGv = 0" without forming the n×n Gram
            scale = self.trace_G()
        else:
            op = self._check_operator(curvature)
            HV = torch.as_tensor(op @ V.cpu().numpy(), device=V.device)
            den = (V * HV).sum(0)
            scale = float(torch.linalg.norm(HV, dim=0).max() / torch.linalg.norm(V, dim=0).max())
        tiny = 1e-12 * scale * (V ** 2).sum(0)
        bad = den <= tiny
        if bad.any():
            j = int(torch.nonzero(bad)[0])
            which = "G" if curvature is None else "the curvature"
            raise ValueError(
                f"{name} column {j} has vᵀCv = {float(den[j]):.3g} ≤ 0 for C = {which}: "
                "g is undefined along a direction of zero or negative curvature")
        return num, den

    def g(self, v, curvature: LinearOperator | None = None, *, normalization: str = "loss"):
        """Directional alignment g(θ; v) = vᵀΣ₁v / (2L · vᵀGv) for one or several directions.

        Parameters
        ----------
        v : array, shape (p,) or (p, k)
            A direction, or k directions as columns (need not be normalised).
        curvature : LinearOperator, optional
            Use vᵀHv instead of vᵀGv.
        normalization : {'loss', 'fisher'}
            Divide by 2L (default) or not, as in :meth:`mu`.

        Returns
        -------
        float or numpy.ndarray of shape (k,)
            On the host, whatever the geometry's device (``v`` is moved there to compute).
        """
        scale = self._scale(normalization)
        single = as_tensor(v, "v", ndim=(1, 2)).ndim == 1
        V = self._directions(v, "v")
        num, den = self._quadratic_forms(V, curvature, "v")
        out = _finite((num / (scale * den)).cpu().numpy(), "g")
        return float(out[0]) if single else out

    def g_subspace(self, V, curvature: LinearOperator | None = None, *, atol: float = 1e-8,
                   normalization: str = "loss") -> float:
        """Subspace alignment g(θ; V) = Tr(VᵀΣ₁V) / (2L Tr(VᵀGV)), V with orthonormal columns.

        This extension of the directional metric to a subspace is the book's own.
        ``normalization='fisher'`` drops the 2L, as in :meth:`mu`. V is moved to the
        geometry's device.
        """
        scale = self._scale(normalization)
        V = self._directions(V, "V")
        gram = V.T @ V
        if not torch.allclose(gram, torch.eye(V.shape[1], dtype=gram.dtype, device=gram.device), atol=atol):
            raise ValueError("V must have orthonormal columns (VᵀV = I); orthonormalise it, e.g. with QR")
        num, den = self._quadratic_forms(V, curvature, "V")
        return _finite(float(num.sum() / (scale * den.sum())), "g(V)")

    # ----- eigenpairs of G -----------------------------------------------
    def top_eigenpairs(self, k: int = 1) -> Eigenpairs:
        """The k largest eigenpairs of G = AᵀA/n, from whichever side is smaller.

        With p ≤ n·k' (k' outputs per sample) ``eigh`` of the p×p matrix AᵀA/n; otherwise
        ``eigh`` of the Gram AAᵀ/n (n·k'×n·k') and u_j = Aᵀw_j/√(n λ_j): the same non-zero
        eigenpairs, and J is never needed beyond products Aᵀw (a factored J never writes it
        out). Residuals ‖Gu_j − λ_j u_j‖ are computed with two more products per pair.

        Parameters
        ----------
        k : int
            1 ≤ k ≤ min(p, n·k'); on the Gram side the pairs must have λ_j > 0.

        Returns
        -------
        Eigenpairs
            ``values`` (largest first), ``vectors`` (p, k) orthonormal, ``residuals``: numpy
            arrays on the host, as :func:`noisegeom.top_eigenpairs` returns them (the
            eigendecomposition and the residuals are computed on the geometry's device; pass
            ``vectors`` back to :meth:`g` or :func:`noisegeom.simulate` as they are, they move
            them to their data's device).
        """
        rows = self._factored.shape[0] if self._factor is None else self._factor.shape[0]
        k = check_int(k, "k", low=1, high=min(self.p, rows))
        G_side = _finite((self.M if self.side == "parameters" else self.K) / self.n, "G (or its Gram matrix)")
        if self.side == "parameters":
            vals, vecs = torch.linalg.eigh(G_side)
            vals, U = vals.flip(0)[:k], vecs.flip(1)[:, :k]
        else:
            vals, W = torch.linalg.eigh(G_side)
            vals, W = vals.flip(0)[:k], W.flip(1)[:, :k]
            # an eigenvalue at rounding level (relative to the largest) is a zero of G
            nonzero = vals > 1e-12 * max(float(vals[0]), 0.0)
            if not bool(nonzero.all()):
                raise ValueError(f"k = {k} asks for more eigenpairs than G has non-zero eigenvalues "
                                 f"({int(nonzero.sum())} of the top {k} are above rounding)")
            U = self._factor_T_times(W) / torch.sqrt(self.n * vals)[None, :]
        U = _fix_signs(U)
        GU = self._factor_T_times(self.factor_times(U)) / self.n
        res = torch.linalg.vector_norm(GU - U * vals[None, :], dim=0)
        return Eigenpairs(values=vals.cpu().numpy().copy(), vectors=U.cpu().numpy().copy(),
                          residuals=res.cpu().numpy().copy())

    def _factor_T_times(self, W: torch.Tensor) -> torch.Tensor:
        """Aᵀ W for W of shape (n·k', m)."""
        if self._factor is None:
            return torch.stack([self._factored.rmatvec(W[:, j]) for j in range(W.shape[1])], 1)
        return self._factor.T @ W

    # ----- operators and dense matrices ---------------------------------
    def sigma_operator(self, batch_size: int | None = None, *, replacement: bool = False) -> LinearOperator:
        """Σ₁ (or Σ_B) as a matrix-free operator (numpy in and out, products on the geometry's device)."""
        return noise_covariance_operator(self.grads, batch_size=batch_size, replacement=replacement)

    def G_operator(self) -> LinearOperator:
        """G as a matrix-free operator (numpy in and out, products on the geometry's device)."""
        return gauss_newton_operator(self.factor, n=self.n)

    def __repr__(self) -> str:
        return f"NoiseGeometry(n={self.n}, p={self.p}, loss={self.loss:.4g})"


def average_alignment(J, e) -> float:
    """μ(θ) for the square loss from the Jacobian J (n×p) and residuals e (n,); see :class:`NoiseGeometry`."""
    return NoiseGeometry.square_loss(J, e).mu()


def directional_alignment(J, e, v):
    """g(θ; v) for the square loss; v of shape (p,) or (p, k)."""
    return NoiseGeometry.square_loss(J, e).g(v)


def subspace_alignment(J, e, V) -> float:
    """g(θ; V) for the square loss; V (p×k) with orthonormal columns (the book's extension)."""
    return NoiseGeometry.square_loss(J, e).g_subspace(V)


def isotropic_alignment(J, e) -> float:
    """μ of isotropic noise at matched trace, for the square loss."""
    return NoiseGeometry.square_loss(J, e).mu_isotropic()
