"""Models as functions of one flat parameter vector θ ∈ R^p.

Curvature and noise are statements about vectors and matrices in parameter
space, so every model in the book is seen as a map ``f(θ, X)`` with θ a single
float64 vector. :class:`FlatModel` does this for any ``torch.nn.Module`` with
``torch.func.functional_call``; the constructors below build the models the
chapters use (linear, deep linear, diagonal ``u ⊙ v``, two-layer networks, an
MLP and a small CNN for the digits data).
"""

from __future__ import annotations

import math

import numpy as np

import torch
from torch import nn
from torch.func import functional_call, vmap

from ._checks import DTYPE, as_tensor, check_int, check_positive, check_seed

__all__ = [
    "FlatModel",
    "linear_model",
    "deep_linear_model",
    "diagonal_linear_model",
    "two_layer_net",
    "mlp",
    "small_cnn",
    "ACTIVATIONS",
]


# Layers whose output, in training mode, is random: a per-sample gradient is then not a
# function of θ and the sample alone.
_RANDOM_IN_TRAINING = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                       nn.FeatureAlphaDropout, nn.RReLU)


def check_per_sample(module: nn.Module, name: str = "module") -> None:
    """Refuse a module whose output for one sample is not a function of θ and that sample.

    Per-sample gradients, the noise covariance Σ₁ and the Gauss–Newton matrix are defined
    sample by sample. Three kinds of layers break that, and each gets a ``ValueError`` that
    says what to do:

    * batch normalisation in training mode: it normalises with the batch's statistics
      (coupling the samples) and updates its running statistics on every forward pass;
    * batch normalisation without running statistics (``track_running_stats=False``): it
      uses the batch's statistics even in eval mode;
    * dropout and ``RReLU`` in training mode: their output is random.

    Instance normalisation with running statistics is refused in training mode too (a
    forward pass would change them). Call ``module.eval()`` before measuring.
    """
    for sub_name, sub in module.named_modules():
        where = f"{type(sub).__name__} ({sub_name!r})" if sub_name else type(sub).__name__
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            if sub.training:
                raise ValueError(
                    f"{name} is in training mode and contains {where}, which normalises with the statistics of "
                    f"the batch (coupling the samples) and updates its running statistics on every forward pass; "
                    f"call {name}.eval() first: noisegeom measures per-sample quantities at fixed parameters")
            if sub.running_mean is None:
                raise ValueError(
                    f"{name} contains {where} without running statistics (track_running_stats=False), which "
                    f"normalises with the statistics of the batch even in eval mode, so a sample's output depends "
                    f"on the other samples and per-sample gradients are not defined")
        elif isinstance(sub, nn.modules.instancenorm._InstanceNorm) and sub.training and sub.track_running_stats:
            raise ValueError(f"{name} is in training mode and contains {where}, which updates its running "
                             f"statistics on every forward pass; call {name}.eval() first")
        elif isinstance(sub, _RANDOM_IN_TRAINING) and sub.training:
            raise ValueError(f"{name} is in training mode and contains {where}, whose output is random; call "
                             f"{name}.eval() first: noisegeom measures per-sample quantities at fixed parameters")


def probe_per_sample(model: "FlatModel", theta: torch.Tensor, X: torch.Tensor, full=None) -> str | None:
    """Why the model is not a per-sample function, or None: a test by evaluation.

    The outputs of the first samples must not change between two evaluations (else the
    model is random) nor when the rest of the batch is left out (else it couples the
    samples, as batch statistics do). :func:`~noisegeom.models.check_per_sample` names the known culprits;
    this catches the others. ``full``: the outputs on all of X, if already computed.
    """
    m = min(int(X.shape[0]), 3)
    with torch.no_grad():
        part = model.forward(theta, X[:m])
        again = model.forward(theta, X[:m])
        if not torch.equal(part, again):
            return "two evaluations on the same samples differ (the module's output is random)"
        if X.shape[0] > m:
            full = (model.forward(theta, X) if full is None else full.detach())[:m]
            scale = float(full.abs().max()) if full.numel() else 0.0
            if not torch.allclose(full, part, rtol=1e-9, atol=1e-12 * max(scale, 1.0)):
                return ("a sample's output changes with the other samples of the batch (the module couples the "
                        "samples, as batch statistics do), so per-sample gradients are not defined")
    return None


class FlatModel:
    """An ``nn.Module`` seen as a function of one flat parameter vector.

    Parameters
    ----------
    module : torch.nn.Module
        The network. Its trainable parameters, in ``named_parameters`` order,
        are concatenated into θ. Buffers (e.g. a fixed outer layer) are kept
        fixed and are not part of θ. The module is converted to float64 in place:
        this wrapper is for the book's own models. To measure a module of your own
        without touching it, use :meth:`noisegeom.NoiseGeometry.from_module`.
    squeeze : bool, default True
        If the module returns shape ``(n, 1)``, return ``(n,)`` so that a
        scalar model has residuals ``e_i = f(x_i; θ) − y_i`` of shape ``(n,)``.

    Attributes
    ----------
    p : int
        Number of parameters.
    theta0 : torch.Tensor
        The module's initial parameters as a flat float64 vector, shape ``(p,)``.
    device : torch.device
        Where ``theta0`` and the buffers live; :meth:`~noisegeom.FlatModel.to` moves the model.

    Examples
    --------
    >>> model = linear_model(3)
    >>> X = torch.eye(3, dtype=torch.float64)
    >>> model(torch.ones(3, dtype=torch.float64), X)
    tensor([1., 1., 1.], dtype=torch.float64)
    """

    def __init__(self, module: nn.Module, *, squeeze: bool = True):
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        check_per_sample(module)
        self.module = module.to(DTYPE)
        named = [(k, v) for k, v in self.module.named_parameters() if v.requires_grad]
        if not named:
            raise ValueError("module has no trainable parameters (no parameters with requires_grad=True): there is "
                             "nothing to measure")
        self._names = [k for k, _ in named]
        self._shapes = [tuple(v.shape) for _, v in named]
        self._numels = [v.numel() for _, v in named]
        self._buffers = {k: v for k, v in self.module.named_buffers()}
        self.theta0 = torch.cat([v.detach().reshape(-1) for _, v in named]).clone()
        self.p = int(self.theta0.numel())
        self.squeeze = squeeze

    @property
    def device(self) -> torch.device:
        """The device of ``theta0`` and of the module's buffers (see :meth:`to`)."""
        return self.theta0.device

    def to(self, device) -> "FlatModel":
        """Move the model to ``device``, in place (as ``torch.nn.Module.to`` does), and return it.

        The module (its parameters and buffers), ``theta0`` and the buffers that :meth:`forward`
        passes to the module all move; the dtype stays float64. The model's parameters enter
        every evaluation as θ, so data on a GPU needs θ there too: ``model.to(X.device)`` puts
        ``theta0``, the usual starting point, next to the data, and the buffers (a fixed outer
        layer, say) with it.

        Parameters
        ----------
        device : str, int or torch.device
            For instance ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``X.device``.

        Returns
        -------
        FlatModel
            ``self``.

        Examples
        --------
        >>> model = mlp([4, 3, 2]).to("cpu")
        >>> model.device, model.theta0.dtype
        (device(type='cpu'), torch.float64)
        """
        if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
            raise TypeError(f"device must be a str, int or torch.device such as 'cuda', got {type(device).__name__}")
        try:
            device = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda:0', got {device!r}") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device is {device} but CUDA is not available here (torch {torch.__version__}, "
                             f"torch.cuda.is_available() is False); use 'cpu'")
        self.module.to(device=device)
        self._buffers = {k: v for k, v in self.module.named_buffers()}
        self.theta0 = self.theta0.to(device)
        return self

    def unflatten(self, theta: torch.Tensor) -> dict:
        """Split θ into the module's named parameter tensors."""
        if len(self._names) == 1:  # a view, no split: its backward would copy every gradient
            return {self._names[0]: theta.view(self._shapes[0])}
        chunks = torch.split(theta, self._numels)
        return {k: c.view(s) for k, c, s in zip(self._names, chunks, self._shapes)}

    def forward(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Evaluate f(X; θ) without checks (used inside ``vmap``/``grad``)."""
        out = functional_call(self.module, (self.unflatten(theta), self._buffers), (X,))
        if self.squeeze and out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out

    def forward_batched(self, thetas: torch.Tensor, X: torch.Tensor, *, per_theta: bool) -> torch.Tensor:
        """Evaluate f at S parameter vectors at once, without checks.

        ``thetas`` has shape (S, p). With ``per_theta=False`` every vector sees the
        same inputs ``X`` (shape (B, …)); with ``per_theta=True`` vector s sees its
        own batch ``X[s]`` (``X`` of shape (S, B, …)). Returns shape (S, B) (or
        (S, B, k) for k outputs).

        A module that defines ``forward_batched(params, X, per_theta)`` (every entry of
        ``params`` with a leading axis of length S) is called directly: one plain
        batched pass, which for a small model costs a fraction of the generic route,
        ``vmap`` over ``functional_call``. :func:`noisegeom.simulate` steps through this
        method every iteration; the book's two-layer and linear models define the hook.
        """
        plain = getattr(self.module, "forward_batched", None)
        if plain is None:
            return vmap(self.forward, in_dims=(0, 0 if per_theta else None))(thetas, X)
        if len(self._names) == 1:
            params = {self._names[0]: thetas.view(thetas.shape[0], *self._shapes[0])}
        else:
            chunks = torch.split(thetas, self._numels, dim=1)
            params = {k: c.view(c.shape[0], *s) for k, c, s in zip(self._names, chunks, self._shapes)}
        out = plain(params, X, per_theta)
        if self.squeeze and out.ndim == 3 and out.shape[2] == 1:
            out = out[..., 0]
        return out

    def __call__(self, theta, X) -> torch.Tensor:
        # Shape checks only, and no detach: the call must stay differentiable and
        # usable inside torch.func transforms (no data-dependent checks there).
        if not isinstance(theta, torch.Tensor):
            theta = as_tensor(theta, "theta", ndim=1)
        if theta.ndim != 1 or theta.numel() != self.p:
            raise ValueError(f"theta must be a vector of length p = {self.p}, got shape {tuple(theta.shape)}")
        if not isinstance(X, torch.Tensor):
            X = as_tensor(X, "X")
        return self.forward(theta, X.to(theta.dtype))

    def __repr__(self) -> str:
        return f"FlatModel(p={self.p}, module={self.module.__class__.__name__})"


# Models draw from their own stream, spawned from (seed, _MODEL_STREAM). The data constructors
# (gaussian_inputs, teacher_labels) seed a generator with the seed itself; had the models done
# the same, a model and a data set built with one seed would read the same normals, and the
# first layer of a network would be a rescaled copy of the first inputs.
_MODEL_STREAM = 0x6D6F64656C        # "model"


def _model_seed(seed: int) -> int:
    seq = np.random.SeedSequence([check_seed(seed), _MODEL_STREAM])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> 1)   # torch wants < 2**63


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(_model_seed(seed))


class _Linear(nn.Module):
    """f(x) = θᵀx."""

    def __init__(self, d: int, init_scale: float, g: torch.Generator):
        super().__init__()
        self.theta = nn.Parameter(init_scale * torch.randn(d, generator=g, dtype=DTYPE))

    def forward(self, X):
        return X @ self.theta

    def forward_batched(self, params, X, per_theta):
        theta = params["theta"]                                   # (S, d)
        # the same operations as vmap(forward), so both routes agree to the last bit
        return (X @ theta.T).T if not per_theta else (X @ theta[:, :, None])[..., 0]


def linear_model(d: int, *, init_scale: float = 0.0, seed: int = 0) -> FlatModel:
    """The linear model f(x; θ) = θᵀx with p = d (chapters 1 and 4).

    Parameters
    ----------
    d : int
        Input dimension.
    init_scale : float, default 0
        θ0 has i.i.d. N(0, init_scale²) entries (zero by default).
    seed : int
        Seed for the initialisation.
    """
    d = check_int(d, "d", low=1)
    init_scale = check_positive(init_scale, "init_scale", allow_zero=True)
    return FlatModel(_Linear(d, init_scale, _generator(seed)))


class _DeepLinear(nn.Module):
    """f(x) = w_Lᵀ W_{L-1} ⋯ W_1 x, a linear predictor with a product reparameterisation."""

    def __init__(self, d: int, depth: int, width: int, g: torch.Generator):
        super().__init__()
        dims = [d] + [width] * (depth - 1) + [1]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(dims[k + 1], dims[k], generator=g, dtype=DTYPE) / math.sqrt(dims[k]))
             for k in range(depth)]
        )

    def forward(self, X):
        h = X
        for W in self.weights:
            h = h @ W.T
        return h


def deep_linear_model(d: int, *, depth: int = 3, width: int | None = None, seed: int = 0) -> FlatModel:
    """Deep linear network f(x) = ⟨F(θ), x⟩ with F(θ) = (W_L ⋯ W_1)ᵀ (chapter 4).

    The predictor is linear in x but θ lives in a space of dimension
    p = d·w + (depth−2)·w² + w, so the parameter count can grow while the
    function class stays the same.
    """
    d = check_int(d, "d", low=1)
    depth = check_int(depth, "depth", low=1)
    width = d if width is None else check_int(width, "width", low=1)
    return FlatModel(_DeepLinear(d, depth, width, _generator(seed)))


class _Diagonal(nn.Module):
    """f(x) = ⟨u ⊙ v, x⟩."""

    def __init__(self, d: int, init_scale: float, g: torch.Generator):
        super().__init__()
        self.u = nn.Parameter(init_scale * (1 + 0.1 * torch.randn(d, generator=g, dtype=DTYPE)))
        self.v = nn.Parameter(init_scale * (1 + 0.1 * torch.randn(d, generator=g, dtype=DTYPE)))

    def forward(self, X):
        return X @ (self.u * self.v)


def diagonal_linear_model(d: int, *, init_scale: float = 1.0, seed: int = 0) -> FlatModel:
    """Diagonal linear network f(x) = ⟨u ⊙ v, x⟩, p = 2d (chapter 4)."""
    d = check_int(d, "d", low=1)
    init_scale = check_positive(init_scale, "init_scale", allow_zero=True)
    return FlatModel(_Diagonal(d, init_scale, _generator(seed)))


ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softplus": torch.nn.functional.softplus,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
    "linear": lambda z: z,
}


def _activation(name: str):
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class _TwoLayer(nn.Module):
    """f(x) = Σ_k a_k σ(w_kᵀx)."""

    def __init__(self, d, width, activation, train_outer, g):
        super().__init__()
        self.sigma = _activation(activation)
        self.W = nn.Parameter(torch.randn(width, d, generator=g, dtype=DTYPE) / math.sqrt(d))
        a = (2.0 * torch.randint(0, 2, (width,), generator=g).to(DTYPE) - 1.0) / math.sqrt(width)
        if train_outer:
            self.a = nn.Parameter(a)
        else:
            self.register_buffer("a", a)

    def forward(self, X):
        # F.linear, not X @ W.T: factored_jacobian recognises linear layers by this call
        h = self.sigma(torch.nn.functional.linear(X, self.W))
        return torch.nn.functional.linear(h, self.a[None])[:, 0]

    def forward_batched(self, params, X, per_theta):
        # S weight matrices at once (FlatModel.forward_batched): (S, B, d) @ (S, d, m)
        # (the same operations as vmap(forward), so both routes agree to the last bit)
        h = self.sigma(X @ params["W"].transpose(1, 2))          # (S, B, m)
        if "a" in params:                                          # trained outer layer, (S, m)
            return (h @ params["a"][:, :, None])[..., 0]
        return torch.nn.functional.linear(h, self.a[None])[..., 0]


def two_layer_net(d: int, width: int, *, activation: str = "tanh", train_outer: bool = False,
                  seed: int = 0) -> FlatModel:
    """Two-layer network f(x) = Σ_k a_k σ(w_kᵀx) (chapters 3, 5, 7, 8).

    Inner weights w_k ~ N(0, I/d); outer weights a_k = ±1/√width, fixed by
    default (``train_outer=False``, the setting of chapter 5), so
    ∇_{w_k} f = a_k σ'(w_kᵀx) x and p = width·d.

    Parameters
    ----------
    d, width : int
        Input dimension and number of hidden units.
    activation : {'tanh', 'relu', 'softplus', 'sigmoid', 'gelu', 'linear'}
    train_outer : bool
        Also train a (then p = width·(d+1)).
    seed : int
    """
    d = check_int(d, "d", low=1)
    width = check_int(width, "width", low=1)
    if not isinstance(train_outer, bool):
        raise TypeError(f"train_outer must be True or False, got {train_outer!r}")
    return FlatModel(_TwoLayer(d, width, activation, train_outer, _generator(seed)))


class _MLP(nn.Module):
    def __init__(self, sizes, activation, g):
        super().__init__()
        self.sigma = _activation(activation)
        self.layers = nn.ModuleList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            lin = nn.Linear(a, b, dtype=DTYPE)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(b, a, generator=g, dtype=DTYPE) * math.sqrt(2.0 / a)
                                 if activation == "relu" else
                                 torch.randn(b, a, generator=g, dtype=DTYPE) / math.sqrt(a))
                lin.bias.zero_()
            self.layers.append(lin)

    def forward(self, X):
        h = X.reshape(X.shape[0], -1)
        for k, layer in enumerate(self.layers):
            h = layer(h)
            if k < len(self.layers) - 1:
                h = self.sigma(h)
        return h


def mlp(sizes, *, activation: str = "tanh", seed: int = 0) -> FlatModel:
    """Fully connected network with layer sizes ``sizes = [d, h1, ..., k]`` (chapter 9).

    Inputs of any shape are flattened. With k > 1 outputs use
    ``loss='cross_entropy'`` or multi-output square loss.
    """
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a sequence of layer sizes [d, h1, ..., k], got {sizes!r}")
    sizes = [check_int(s, "sizes[i]", low=1) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least input and output sizes, got {sizes}")
    return FlatModel(_MLP(sizes, activation, _generator(seed)))


class _SmallCNN(nn.Module):
    def __init__(self, channels, n_classes, image_shape, seed):
        super().__init__()
        self.image_shape = image_shape
        # nn.Conv2d draws from the global generator; fork it so the caller's stream is untouched
        with torch.random.fork_rng():
            torch.manual_seed(_model_seed(seed))
            self._build(channels, n_classes)

    def _build(self, channels, n_classes):
        c_in, _, width = self.image_shape
        self.conv1 = nn.Conv2d(c_in, channels, 3, padding=1, dtype=DTYPE)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, dtype=DTYPE)
        self.head = nn.Linear(channels * (width // 2), n_classes, dtype=DTYPE)

    def forward(self, X):
        h = X.reshape(X.shape[0], *self.image_shape)
        h = torch.tanh(self.conv1(h))
        h = torch.nn.functional.avg_pool2d(torch.tanh(self.conv2(h)), 2)  # H x W -> H/2 x W/2
        h = h.mean(dim=(2,)).reshape(X.shape[0], -1)  # pool rows: C x W/2
        return self.head(h)


def small_cnn(*, channels: int = 8, n_classes: int = 10, image_shape=(1, 8, 8), seed: int = 0) -> FlatModel:
    """A two-convolution network for images, by default the 8×8 digits (chapter 9).

    Two 3×3 convolutions (padding 1, tanh), a 2×2 average pool, a mean over image rows and a
    linear head: ``channels · (W/2)`` features, so the head stays small for 28×28 or 32×32 images.

    Parameters
    ----------
    channels : int
        Channels of both convolutions.
    n_classes : int
        Outputs (class scores; 1 gives a scalar model).
    image_shape : tuple of int
        (C, H, W) of one image, H and W at least 2; the inputs may be given flat, shape (n, C·H·W),
        or as images, shape (n, C, H, W). (1, 28, 28) for MNIST, (3, 32, 32) for CIFAR-10.
    seed : int
        Seed of the initialisation (the global torch generator is left untouched).
    """
    channels = check_int(channels, "channels", low=1)
    n_classes = check_int(n_classes, "n_classes", low=1)
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise ValueError(f"image_shape must be (channels, height, width), got {image_shape!r}")
    image_shape = tuple(check_int(s, "image_shape[i]", low=1) for s in image_shape)
    if image_shape[1] < 2 or image_shape[2] < 2:
        raise ValueError(f"image_shape must have height and width >= 2 (the network pools 2x2), got {image_shape}")
    return FlatModel(_SmallCNN(channels, n_classes, image_shape, seed))
