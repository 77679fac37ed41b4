"""Hand-crafted audio features: AutoFX-style spectral descriptors, functionals, MFCCs (`fxlens.features.spectral`)."""

from fxlens.features.spectral import (
    AUTOFX_SAMPLE_RATE,
    FEATURE_NAMES,
    FRAME_FEATURES,
    FUNCTIONALS,
    SPECTRAL_FEATURES,
    autofx_features,
    deltas,
    estimate_pitch,
    frame_features,
    functional_names,
    functionals,
    mel_filterbank,
    mfcc,
    stft_magnitude,
    stft_power,
    to_mono,
)

__all__ = [
    "AUTOFX_SAMPLE_RATE",
    "FEATURE_NAMES",
    "FRAME_FEATURES",
    "FUNCTIONALS",
    "SPECTRAL_FEATURES",
    "autofx_features",
    "deltas",
    "estimate_pitch",
    "frame_features",
    "functional_names",
    "functionals",
    "mel_filterbank",
    "mfcc",
    "stft_magnitude",
    "stft_power",
    "to_mono",
]
