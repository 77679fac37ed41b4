"""Properties every registered effect must have, checked generically over the registry."""

import pytest
import torch

from fxlens.fx import effect_names, get_effect
from fxlens.fx.chain import Chain, RandomChain

SR = 44100
NAMES = effect_names()


def _signal(batch: int, T: int = 8192, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, T, generator=g) * 0.2
    x[..., T // 2:] *= 0.1  # a loud then a quiet part, so dynamics effects have something to do
    return x


def test_registry_has_the_issue_effects():
    expected = {"gain", "pan", "stereo_imager", "parametric_eq", "graphic_eq", "compressor", "multiband_compressor",
                "limiter", "clipper", "taylor_waveshaper", "chebyshev_waveshaper", "distortion", "delay",
                "modulated_delay", "tremolo", "phaser", "reverb"}
    assert expected <= set(NAMES), f"missing: {expected - set(NAMES)}"


@pytest.mark.parametrize("name", NAMES)
def test_specs_are_consistent(name):
    effect = get_effect(name)
    assert effect.description, f"{name} has no description"
    for s in effect.specs:
        assert s.unit is not None and s.min < s.max
    u = torch.rand(4, effect.n_params, dtype=torch.float64)
    back = effect.to_normalized(effect.to_physical(u))
    assert torch.allclose(back, u, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_shape_finite_batch_independent_deterministic(name):
    effect = get_effect(name)
    x = _signal(3)
    c = torch.rand(3, effect.n_params, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = effect(x, SR, c)
        y_again = effect(x, SR, c)
        singles = torch.cat([effect(x[i:i + 1], SR, c[i:i + 1]) for i in range(3)])
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert torch.equal(y, y_again)
    assert (y - singles).abs().max() <= 1e-5 * max(1.0, y.abs().max().item())


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_audio_and_controls(name):
    effect = get_effect(name)
    x = _signal(2, T=4096).requires_grad_(True)
    c = torch.rand(2, effect.n_params, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    effect(x, SR, c).square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(c.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_preset_round_trip_reproduces_audio(name):
    rc = RandomChain([name], probabilities=1.0)
    x = _signal(2)
    with torch.no_grad():
        y, presets = rc(x, SR, seed=11)
        for i, p in enumerate(presets):
            z = Chain.from_preset(p)(x[i:i + 1], SR)
            assert (z - y[i:i + 1]).abs().max() <= 1e-6 * max(1.0, y.abs().max().item())
