"""Reference quantities for checking estimators and measuring learned models.

- :mod:`.gradients`: exact log marginals and gradients by quadrature; relative error and cosine
  similarity between gradient estimates;
- :mod:`.likelihood`: ``log p(x)`` by importance sampling and annealed importance sampling;
- :mod:`.distances`: the Amari distance between mixing matrices and the MMD between samples;
- :mod:`.score_bias`: the bias of an ALWS gradient at the parameters the data are drawn from
  (where the exact score has mean zero), for any model.

Every name is importable from ``alws.evaluate`` itself.
"""
from __future__ import annotations

from .distances import amari_distance, mmd
from .gradients import cosine_similarity, exact_gradient, gauss_hermite_grid, quadrature_log_marginal, relative_error
from .likelihood import LogLikelihood, ais_log_likelihood, importance_log_likelihood
from .score_bias import ScoreBias, score_bias

__all__ = [
    "gauss_hermite_grid",
    "quadrature_log_marginal",
    "exact_gradient",
    "relative_error",
    "cosine_similarity",
    "LogLikelihood",
    "importance_log_likelihood",
    "ais_log_likelihood",
    "amari_distance",
    "mmd",
    "ScoreBias",
    "score_bias",
]
