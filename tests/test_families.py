import pytest
import torch
from torch import distributions as D

from alws import families
from alws.errors import ModelProtocolError


def make(cls, shape, gen):
    u = lambda: torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5  # noqa: E731
    return {
        D.Normal: lambda: D.Normal(torch.randn(shape, generator=gen, dtype=torch.float64), u()),
        D.Bernoulli: lambda: D.Bernoulli(logits=torch.randn(shape, generator=gen, dtype=torch.float64)),
        D.ContinuousBernoulli: lambda: D.ContinuousBernoulli(logits=torch.randn(shape, generator=gen, dtype=torch.float64)),
        D.Poisson: lambda: D.Poisson(u() * 3),
        D.Exponential: lambda: D.Exponential(u()),
        D.Gamma: lambda: D.Gamma(u() * 2, u()),
        D.Beta: lambda: D.Beta(u(), u()),
        D.LogNormal: lambda: D.LogNormal(torch.randn(shape, generator=gen, dtype=torch.float64), u()),
        D.Dirichlet: lambda: D.Dirichlet(u().unsqueeze(-1).expand(*shape, 3) + torch.rand(*shape, 3, generator=gen, dtype=torch.float64)),
    }[cls]()


@pytest.mark.parametrize("cls", list(families.SUFFICIENT_STATISTICS))
def test_log_prob_is_eta_dot_s_minus_phi_up_to_a_parameter_free_term(cls):
    # log p(x) - (eta . S(x) - Phi) is the log base measure: the same for any parameters.
    gen = torch.Generator().manual_seed(0)
    n = 5
    first, second = make(cls, (n, 2), gen), make(cls, (n, 2), gen)
    x = first.sample()
    residuals = []
    for dist in (first, second):
        eta, phi = families.natural_terms(D.Independent(dist, 1), n)
        s = families.sufficient_statistics(dist, x)
        log_p = dist.log_prob(x).reshape(n, -1).sum(1)
        residuals.append(log_p - ((eta * s).sum(1) - phi))
    assert torch.allclose(residuals[0], residuals[1], atol=1e-8)
    # and the natural parameters really differ between the two, so the check can fail
    assert not torch.allclose(families.natural_terms(first, n)[0], families.natural_terms(second, n)[0])


def test_unsupported_family_is_refused_by_name():
    with pytest.raises(ModelProtocolError, match="StudentT"):
        families.natural_terms(D.StudentT(3.0, torch.zeros(2, 1), 1.0), 2)


def test_bernoulli_terms_stay_finite_and_exact_at_saturated_float32_logits():
    # sigmoid rounds to exactly 0 or 1 in float32 at these logits: torch's own logit(probs) form
    # gives +-inf (the cause of NaN losses in long fast-path image runs).
    logits = torch.tensor([[30.0, -120.0, 17.5, 0.3]], requires_grad=True)
    dist = D.Independent(D.Bernoulli(logits=logits), 1)
    assert not torch.isfinite(dist.base_dist._natural_params[0]).all()  # the failure this guards against
    eta, phi = families.natural_terms(dist, 1)
    assert torch.isfinite(eta).all() and torch.isfinite(phi).all()
    assert torch.equal(eta, logits)
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    surrogate = (eta * families.sufficient_statistics(dist, x)).sum() - phi.sum()
    assert torch.allclose(surrogate, dist.log_prob(x).sum())
    grad, = torch.autograd.grad(surrogate, logits)
    reference, = torch.autograd.grad(dist.log_prob(x).sum(), logits)
    assert torch.isfinite(grad).all() and torch.allclose(grad, reference)
