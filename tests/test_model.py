import torch
from torch import distributions as D
from torch import nn

import alws
from alws.model import exponential_family


class StudentLikelihood(alws.LatentVariableModel):
    """A likelihood with no registered sufficient statistics: the plain path must be used."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1))

    def sample(self, n):
        z = torch.randn(n, 1)
        return z, self.likelihood(z).sample()

    def log_prior(self, z):
        return D.Normal(0.0, 1.0).log_prob(z).sum(1)

    def likelihood(self, z):
        return D.StudentT(3.0, z + self.loc, 1.0)


def test_unsupported_likelihood_family_falls_back_to_the_plain_path():
    model = StudentLikelihood()
    assert exponential_family(model) is None
    assert not alws.check_model(model).exponential_family
    record = alws.ALWS(model, n_sleep=50).loss(torch.randn(10, 1))[1]
    assert record["path"] == "log-joint"
