"""Every input check of alws in one place.

Public entry points call these at the boundary; the code inside trusts its inputs.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .errors import ConfigError, DataError, ModelProtocolError

__all__ = [
    "as_tensor",
    "check_data",
    "check_finite",
    "check_positive",
    "check_int",
    "check_choice",
    "leading_size",
    "tree_leaves",
    "tree_map",
]


def tree_leaves(z: Any) -> list:
    """Leaves of a latent pytree (tensor, or nested tuple/list/dict of tensors)."""
    if isinstance(z, torch.Tensor):
        return [z]
    if isinstance(z, dict):
        return [leaf for key in z for leaf in tree_leaves(z[key])]
    if isinstance(z, (tuple, list)):
        return [leaf for item in z for leaf in tree_leaves(item)]
    return [z]


def leading_size(z: Any) -> int:
    """Size of the leading (sample) dimension shared by every tensor leaf of ``z``."""
    sizes = {leaf.shape[0] for leaf in tree_leaves(z) if isinstance(leaf, torch.Tensor) and leaf.dim() > 0}
    if len(sizes) != 1:
        raise ModelProtocolError(f"latent leaves must share one leading sample dimension; got sizes {sorted(sizes)}")
    return sizes.pop()


def as_tensor(x: Any, name: str = "data") -> torch.Tensor:
    """``x`` as a tensor (numpy arrays and nested lists are converted; tensors are returned as they are)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as error:
            raise DataError(f"{name} could not be converted to a tensor: {error}") from None
    raise DataError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def check_finite(x: torch.Tensor, name: str = "data") -> None:
    """Raise :class:`DataError` naming the count and first index of NaN/inf entries in ``x``."""
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            count = int(bad.sum())
            first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
            kind = "NaN" if bool(torch.isnan(x).any()) else "infinite"
            raise DataError(f"{name} contains {count} non-finite ({kind}) value(s); first at index {first}")


def check_data(x: Any, sample_shape: Sequence[int] | None = None, name: str = "data", dtype: torch.dtype | None = None) -> torch.Tensor:
    """Validate data ``x`` of shape ``[M, *sample_shape]`` and return it as a tensor.

    Raises :class:`DataError` for empty data, a per-sample shape other than ``sample_shape``
    (the shape of one ``x`` drawn by ``model.sample``), and NaN or infinite entries. With
    ``dtype`` (that of the model's samples) the data are converted to it; a conversion that would
    change values (non-integers to an integer type) is refused.
    """
    x = as_tensor(x, name)
    if x.is_complex():
        raise DataError(f"{name} is complex ({x.dtype}); alws models real-valued data: pass the real part, or real and "
                        "imaginary parts as separate coordinates")
    if x.dim() == 0:
        raise DataError(f"{name} must have a leading sample dimension; got a scalar")
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty (shape {tuple(x.shape)}); at least one data point is needed")
    if sample_shape is not None and tuple(x.shape[1:]) != tuple(sample_shape):
        raise DataError(
            f"{name} has per-sample shape {tuple(x.shape[1:])} (full shape {tuple(x.shape)}), but the model's "
            f"samples x have per-sample shape {tuple(sample_shape)}"
        )
    check_finite(x, name)
    if dtype is not None and x.dtype != dtype:
        if dtype.is_floating_point and x.is_floating_point() and x.numel():
            largest = float(x.abs().max())
            if largest > torch.finfo(dtype).max:
                raise DataError(f"{name} has values up to {largest:.3g}, beyond the range of the model's {dtype} "
                                f"({torch.finfo(dtype).max:.3g}); rescale the data or use a {x.dtype} model")
        converted = x.to(dtype)
        if not dtype.is_floating_point and not dtype.is_complex and not bool((converted.to(x.dtype) == x).all()):
            raise DataError(f"{name} has non-integer values but the model's samples x are {dtype}; convert or round the data")
        x = converted
    return x


def check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    """Raise :class:`ConfigError` (a ``ValueError``) unless ``value`` is a finite number > 0."""
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise :class:`ConfigError` (a ``ValueError``) unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices`` (listing them)."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(map(str, choices))}")


def tree_map(fn, z: Any) -> Any:
    """Apply ``fn`` to every tensor leaf of a latent pytree, keeping its structure."""
    if isinstance(z, torch.Tensor):
        return fn(z)
    if isinstance(z, dict):
        return {key: tree_map(fn, value) for key, value in z.items()}
    if isinstance(z, (tuple, list)):
        return type(z)(tree_map(fn, item) for item in z)
    return z
