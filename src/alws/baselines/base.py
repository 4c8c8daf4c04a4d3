"""What the encoder-based baselines share: a model trained with an amortised posterior (encoder)."""
from __future__ import annotations

import torch
from torch import nn

from ..model import check_model
from ..objective import Objective
from ..validation import check_choice, check_data
from .encoders import FAMILIES, check_encoder, make_encoder

__all__ = ["EncoderObjective"]


class EncoderObjective(Objective):
    """An :class:`~alws.objective.Objective` that trains ``model`` (unless ``train_model=False``:
    then only the encoder, amortised inference at fixed parameters) together with ``encoder``, a
    module ``x [B, ...] -> distribution over z`` (batch ``[B]``). Without one, :meth:`prepare`
    builds :func:`~alws.baselines.encoders.make_encoder`'s for the data (family
    ``encoder_family``) and :meth:`build_encoder` may wrap it."""

    #: whether the objective needs ``rsample`` from the encoder
    needs_rsample = True

    def __init__(self, model: nn.Module, encoder: nn.Module | None = None, encoder_family: str = "normal", train_model: bool = True):
        check_choice("encoder_family", encoder_family, FAMILIES)
        self.model, self.encoder = model, encoder
        self.encoder_family, self.train_model = encoder_family, train_model

    def build_encoder(self, data: torch.Tensor) -> nn.Module:
        return make_encoder(self.model, data, self.encoder_family)

    def prepare(self, data) -> torch.Tensor:
        info = check_model(self.model, data)
        data = check_data(data, info.x_shape, dtype=info.x_dtype).to(info.device)
        if self.encoder is None:
            self.encoder = self.build_encoder(data)
        check_encoder(self.model, self.encoder, data, self.needs_rsample)
        return data

    def modules(self) -> dict:
        return {"model": self.model, "encoder": self.encoder}

    def parameters(self) -> list:
        return (list(self.model.parameters()) if self.train_model else []) + list(self.encoder.parameters())

    def describe(self) -> dict:
        return {"method": self.name, "train_model": self.train_model}
