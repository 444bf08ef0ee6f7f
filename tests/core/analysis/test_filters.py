"""Feature filters select rows by range, keep spots without a value, and explain unknown features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect.core.analysis.filters import apply_filters, filter_mask, histogram, make_filter, numeric_features
from napari_spotdetect.core.errors import SpotDetectError


def test_filters_combine_and_keep_missing_values():
    df = pd.DataFrame({"y": [1.0, 2, 3, 4], "x": [0.0] * 4, "score": [0.2, 0.5, 0.9, np.nan],
                       "snr": [10.0, 2.0, 8.0, 7.0], "fit_ok": [True] * 4, "source": list("pppm")})
    assert numeric_features(df) == ["score", "snr"]
    f = [make_filter("score", min=0.3), make_filter("snr", 5, None)]
    assert filter_mask(df, f).tolist() == [False, False, True, True]
    assert filter_mask(df, f, keep_missing=False).tolist() == [False, False, True, False]
    out = apply_filters(df, [make_filter("snr", max=8.0)])
    assert out["y"].tolist() == [2.0, 3.0, 4.0] and out.index.tolist() == [0, 1, 2]
    with pytest.raises(SpotDetectError, match="no feature 'sigma'"):
        filter_mask(df, [make_filter("sigma", 1)])
    with pytest.raises(SpotDetectError, match="above maximum"):
        make_filter("snr", 3, 2)


def test_histogram_ignores_non_finite_values():
    counts, edges = histogram([1.0, 2.0, np.nan, np.inf, 2.0], bins=2)
    assert counts.tolist() == [1, 2] and edges[0] == 1.0 and edges[-1] == 2.0
    counts, edges = histogram([5.0, 5.0], bins=4)
    assert counts.sum() == 2 and edges[0] < 5 < edges[-1]
