"""Ready-made latent-variable models, one per module.

- :mod:`~alws.models.linear_gaussian`: factor analysis with an exact marginal likelihood (checks);
- :mod:`~alws.models.images`: image generators (MLP, DCGAN) with Bernoulli or Gaussian pixels;
- :mod:`~alws.models.blowfly`: blowfly population dynamics and its count-series reader;
- :mod:`~alws.models.hodgkin_huxley`: a noisy Hodgkin-Huxley neuron.
"""
from __future__ import annotations

from .images import DCGANGenerator, ImageModel, MLPGenerator
from .linear_gaussian import LinearGaussian

__all__ = ["LinearGaussian", "ImageModel", "MLPGenerator", "DCGANGenerator"]
