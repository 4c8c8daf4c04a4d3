"""Feature maps for the kernel: ``x [n, *x_shape] -> [n, dim]``, applied before the kernel.

A fixed Gaussian kernel on raw high-dimensional ``x`` cannot tell data points apart: distances
are dominated by directions the targets do not depend on (noise pixels, irrelevant time steps).
A feature map concentrates the kernel on the directions that matter. The learned maps here are
trained by :class:`alws.kernel_learning.KernelLearning` on held-out *sleep* samples (never the
data) to minimise the error of the very regression the wake gradient uses.

Every map is an ``nn.Module`` with no batch-dependent layer (no BatchNorm: a map that normalised
sleep and wake batches with different statistics would give ``K`` and ``k(X, x*)`` different
feature maps). Each has ``initialise(x)``, called once on the model's first sleep samples, which
sets statistics of the inputs (means, scales, principal directions) from those samples:

- :class:`LinearProjection`: ``dim`` learned linear combinations of the flattened input, started
  at its ``dim`` leading principal directions (unwhitened, so the kernel starts as the Gaussian
  kernel on the leading principal subspace). For vectors, time series and images.
- :class:`MLPFeatures`: standardised input, one hidden layer (SiLU), ``dim`` outputs.
- :class:`ConvFeatures`: standardised input, two stride-2 convolutions (1-D for series ``[T]``,
  2-D for images ``[H, W]`` or ``[C, H, W]``), a linear layer to ``dim`` outputs.
- :class:`RandomProjection`: a fixed, seeded Gaussian projection (nothing learned).

:func:`make_features` builds one by name; :func:`check_features` refuses maps that return the
wrong shape, non-finite values, or depend on the batch.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ModelProtocolError
from .seeding import seeded

__all__ = [
    "FeatureMap",
    "LinearProjection",
    "MLPFeatures",
    "ConvFeatures",
    "RandomProjection",
    "FEATURES",
    "make_features",
    "check_features",
    "describe_features",
]


def _shape(x_shape) -> tuple:
    """``x_shape`` as a tuple of ints (an int ``D`` means vectors ``[D]``)."""
    return (int(x_shape),) if isinstance(x_shape, int) else tuple(int(s) for s in x_shape)


class FeatureMap(nn.Module):
    """Base class: flattens and standardises the input with statistics of the first sleep samples.

    ``x_shape`` is the shape of one ``x`` (without the sample dimension); ``dim`` the number of
    output features. ``initialised`` (a buffer, checkpointed) records whether
    :meth:`initialise` has run.
    """

    def __init__(self, x_shape, dim: int):
        super().__init__()
        self.x_shape = _shape(x_shape)
        self.in_features = math.prod(self.x_shape)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"a feature map needs dim >= 1 output features, got {dim!r}")
        self.dim = dim
        self.register_buffer("mean", torch.zeros(self.in_features))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, in_features]``: flattened, centred and scaled input (in the map's dtype)."""
        dtype = self.mean.dtype
        return (x.reshape(x.shape[0], -1).to(dtype) - self.mean) / self.scale

    @torch.no_grad()
    def initialise(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> None:
        """Set the input mean and scale (the root mean square deviation) from sleep samples ``x``
        (``targets [n, c]``, their regression targets, serve maps that use them)."""
        flat = x.reshape(x.shape[0], -1).to(self.mean.dtype)
        self.mean.copy_(flat.mean(0))
        self.scale.copy_((flat - self.mean).pow(2).mean().sqrt().clamp_min(1e-12))
        self.initialised.fill_(True)

    def extra_repr(self) -> str:
        return f"x_shape={self.x_shape}, dim={self.dim}"


class LinearProjection(FeatureMap):
    """``phi(x) = P (x - mean) / scale``, ``P [dim, D]`` learned; starts at the reduced-rank
    regression of the targets on the sleep samples (see :meth:`initialise`; ``dim`` is capped at
    ``D``).

    ``P`` is stored as ``weight / sqrt(D)`` with entries of ``weight`` of order one, so that an
    optimiser step of a given size changes every projection by a similar fraction whatever ``D``
    (with ``P`` stored directly, Adam's per-entry steps of ``lr`` would rotate a 784-pixel
    projection by a third per step at ``lr = 0.01``).
    """

    def __init__(self, x_shape, dim: int = 16):
        x_shape = _shape(x_shape)
        super().__init__(x_shape, min(dim, math.prod(x_shape)))
        with torch.random.fork_rng(devices=[]):
            self.weight = nn.Parameter(torch.randn(self.dim, self.in_features))
        self.renormalise()

    @torch.no_grad()
    def initialise(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> None:
        """Start at the best rank-``dim`` linear prediction of ``targets [n, c]`` from ``x``
        (reduced-rank ridge regression of the standardised targets: the features are the leading
        principal components of the fitted values, each with its own spread, so directions of
        ``x`` that predict nothing start with weight near zero); without targets, at the leading
        principal directions of ``x``."""
        super().initialise(x)
        flat = self.flat(x).double()
        flat = flat - flat.mean(0)
        n = flat.shape[0]
        if targets is not None:
            y = targets.reshape(n, -1).double()
            y = y - y.mean(0)
            spread = y.std(0)
            y = y[:, spread > 1e-9 * spread.max().clamp_min(1e-300)] / spread[spread > 1e-9 * spread.max().clamp_min(1e-300)]
            # ridge 0.1 relative to the average eigenvalue (1) of the scaled inputs' covariance, in
            # the dual form when there are fewer samples than inputs
            if n < flat.shape[1]:
                coef = flat.T @ torch.linalg.solve(flat @ flat.T + 0.1 * n * torch.eye(n, dtype=flat.dtype, device=flat.device), y)
            else:
                coef = torch.linalg.solve(flat.T @ flat + 0.1 * n * torch.eye(flat.shape[1], dtype=flat.dtype, device=flat.device), flat.T @ y)
            _, _, vh = torch.linalg.svd(flat @ coef, full_matrices=False)
            directions = (coef @ vh.T).T  # [rank, D]: x -> the leading components of the prediction
        else:
            directions = torch.linalg.svd(flat, full_matrices=False)[2]
        k = min(self.dim, directions.shape[0])
        self.weight.zero_()
        self.weight[:k] = directions[:k].to(self.weight.dtype)
        if k < self.dim:
            self.weight[k:] = 1e-3 * torch.randn_like(self.weight[k:]) * self.weight[:k].pow(2).mean().sqrt()
        self.renormalise()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat(x) @ self.weight.T / math.sqrt(self.in_features)

    @torch.no_grad()
    def renormalise(self) -> None:
        """Rescale ``weight`` to entries of root mean square one (as at the start). The held-out
        error does not change with the features' overall scale, so without this Adam lets it
        drift upwards (and its steps shrink in relative size)."""
        self.weight.mul_(1.0 / self.weight.pow(2).mean().sqrt().clamp_min(1e-12))


class MLPFeatures(FeatureMap):
    """Standardised input, ``Linear(D, hidden)``, SiLU, ``Linear(hidden, dim)``."""

    def __init__(self, x_shape, dim: int = 16, hidden: int = 128):
        super().__init__(x_shape, dim)
        self.net = nn.Sequential(nn.Linear(self.in_features, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.flat(x))


class ConvFeatures(FeatureMap):
    """Two stride-2 convolutions (kernel 4, ``width`` and ``2 * width`` channels, SiLU) and a linear
    layer to ``dim`` outputs, on the standardised input: 1-D for series ``x_shape = (T,)``, 2-D
    for images ``(H, W)`` or ``(C, H, W)``."""

    def __init__(self, x_shape, dim: int = 16, width: int = 16):
        super().__init__(x_shape, dim)
        shape = self.x_shape
        if len(shape) == 1:
            self.grid, conv = (1, shape[0]), nn.Conv1d
        elif len(shape) == 2:
            self.grid, conv = (1, *shape), nn.Conv2d
        elif len(shape) == 3:
            self.grid, conv = shape, nn.Conv2d
        else:
            raise ValueError(f"ConvFeatures takes series [T] or images [H, W] / [C, H, W], got x of shape {shape}")
        if min(self.grid[1:]) < 4:
            raise ValueError(f"ConvFeatures needs every spatial side >= 4, got x of shape {shape}")
        self.convs = nn.Sequential(
            conv(self.grid[0], width, 4, stride=2, padding=1), nn.SiLU(),
            conv(width, 2 * width, 4, stride=2, padding=1), nn.SiLU(), nn.Flatten(),
        )
        with torch.no_grad():
            out = self.convs(torch.zeros(1, *self.grid)).shape[1]
        self.head = nn.Linear(out, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(self.flat(x).reshape(x.shape[0], *self.grid)))


class RandomProjection(FeatureMap):
    """``x_flat @ P / sqrt(D)`` with a fixed seeded Gaussian ``P [D, dim]`` (no training, no centring)."""

    def __init__(self, x_shape, dim: int = 64, seed: int = 0):
        super().__init__(x_shape, dim)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(self.in_features, dim, generator=generator) / math.sqrt(self.in_features))
        self.initialised.fill_(True)

    def initialise(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> None:  # fixed: nothing to set
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).to(self.projection.dtype) @ self.projection


#: Feature maps by name (``features=`` of :class:`alws.ALWS`).
FEATURES = {"linear": LinearProjection, "mlp": MLPFeatures, "conv": ConvFeatures, "random-projection": RandomProjection}


def make_features(name: str, x_shape, dim: int = 16, seed: int = 0) -> FeatureMap:
    """A feature map by name (see :data:`FEATURES`) for samples of shape ``x_shape``.

    Parameters are initialised under ``seed`` without touching the global random state.
    """
    if name not in FEATURES:
        raise ValueError(f"unknown features {name!r}; valid: auto, none, {', '.join(FEATURES)}, or an nn.Module / callable")
    with seeded(seed):
        if name == "random-projection":
            return RandomProjection(x_shape, dim, seed=seed)
        return FEATURES[name](x_shape, dim)


def check_features(features, x: torch.Tensor, trained: bool = False) -> None:
    """Refuse a feature map that returns the wrong shape, non-finite values, or depends on the
    batch. ``x [n, *x_shape]`` are sleep samples (``n >= 4``). The batch check compares the
    features of the first two points computed as a pair and within the batch, in evaluation mode
    (how the regression uses an ``nn.Module``) and, for a map that kernel learning trains
    (``trained``), in training mode too: BatchNorm in training mode fails that check."""
    name = type(features).__name__ if isinstance(features, nn.Module) else getattr(features, "__qualname__", type(features).__name__)
    modes = ([True, False] if trained else [False]) if isinstance(features, nn.Module) else [None]
    was_training = features.training if isinstance(features, nn.Module) else None
    try:
        for mode in modes:
            if mode is not None:
                features.train(mode)
            try:
                with torch.no_grad():
                    out = features(x)
                    pair = features(x[:2])
            except Exception as error:  # noqa: BLE001 - report any failure of the user's map
                raise ModelProtocolError(f"feature map {name} failed on the model's samples: {error!r}") from error
            if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != x.shape[0]:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ModelProtocolError(f"feature map {name} returned {shape} for {x.shape[0]} samples; expected [{x.shape[0]}, D]")
            if not bool(torch.isfinite(out).all()):
                raise ModelProtocolError(f"feature map {name} returned NaN or infinite values on the model's samples")
            scale = float(out[:2].abs().max().clamp_min(1.0))
            if pair.shape[1:] != out.shape[1:] or not torch.allclose(pair.double(), out[:2].double(), atol=1e-4 * scale, rtol=1e-4):
                where = "in training mode " if mode else ""
                raise ModelProtocolError(
                    f"feature map {name} {where}depends on the batch: a sample's features differ when computed alone and "
                    "within a batch (BatchNorm in training mode?). Sleep and wake points must go through one and the same map; "
                    "use a map without batch statistics (e.g. GroupNorm or LayerNorm)"
                )
    finally:
        if was_training is not None:
            features.train(was_training)


def describe_features(features) -> str | None:
    """A description of a feature map that is the same in every process (no memory addresses)."""
    if features is None:
        return None
    if isinstance(features, FeatureMap):
        return f"{type(features).__name__}({features.extra_repr()})"
    if hasattr(features, "__qualname__"):
        return features.__qualname__
    simple = {k: v for k, v in sorted(vars(features).items()) if isinstance(v, (int, float, str, bool))} if hasattr(features, "__dict__") else {}
    return f"{type(features).__qualname__}({', '.join(f'{k}={v!r}' for k, v in simple.items())})"
