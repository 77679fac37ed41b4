import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


SR = 44100


def need_renderer(fonts=None) -> None:
    """Skip the calling test without the fluidsynth library or the soundfonts it renders with (default: all)."""
    from fxlens.data import render as R

    if not R.fluidsynth_available():
        pytest.skip("the fluidsynth library is not installed")
    missing = R.missing_soundfonts() if fonts is None else R.missing_soundfonts(fonts)
    if missing:
        pytest.skip(f"soundfonts not installed: {', '.join(missing)}")
