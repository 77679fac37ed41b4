"""The named feature sets that recognition and estimation models read (`FEATURE_SETS`), and `compute_features`."""

from __future__ import annotations

import torch

from fxlens.errors import FxlensError
from fxlens.features.recognition import RECOGNITION_FEATURE_NAMES, recognition_features
from fxlens.features.spectral import FEATURE_NAMES, autofx_features

#: feature sets by name: (function (B, C, T), sample_rate[, resample] -> (B, n), column names)
FEATURE_SETS = {
    "autofx-163": (autofx_features, FEATURE_NAMES),
    "fxlens-406": (recognition_features, RECOGNITION_FEATURE_NAMES),
}
FEATURE_SET = "fxlens-406"


def check_feature_set(feature_set: str) -> None:
    """Raise `FxlensError` (one line, listing the known sets) for a name that is not in `FEATURE_SETS`."""
    if feature_set not in FEATURE_SETS:
        raise FxlensError(f"unknown feature set '{feature_set}' (known: {', '.join(FEATURE_SETS)})")


def compute_features(x: torch.Tensor, sample_rate: int, feature_set: str = FEATURE_SET) -> torch.Tensor:
    """Features of ``x`` ``(B, C, T)`` by feature-set name (`FEATURE_SETS`): ``(B, n)`` float32."""
    check_feature_set(feature_set)
    with torch.no_grad():
        return FEATURE_SETS[feature_set][0](x, sample_rate).float()
