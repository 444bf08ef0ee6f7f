"""Feature filters (as TrackMate's): keep the spots whose score, intensity, SNR, sigma... lie in a range.

A filter is a plain dict ``{"feature": name, "min": lo, "max": hi}`` (either bound may be None), so a list
of them goes into provenance and JSON as is. Filters only select rows of an existing table: no network,
no refit. Spots without a value for a feature (NaN: e.g. the score of a hand-placed spot) are kept unless
``keep_missing=False``: a filter on a measurement should not silently drop what a person added.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import SpotDetectError


def numeric_features(table: pd.DataFrame) -> list[str]:
    """Columns a filter can act on: numbers (booleans excluded), not coordinates."""
    skip = {"t", "c", "z", "y", "x"}
    return [c for c in table.columns if c not in skip and pd.api.types.is_numeric_dtype(table[c])
            and not pd.api.types.is_bool_dtype(table[c])]


def make_filter(feature: str, min=None, max=None) -> dict:
    lo = None if min is None else float(min)
    hi = None if max is None else float(max)
    if lo is not None and hi is not None and lo > hi:
        raise SpotDetectError(f"Filter on {feature!r}: minimum {lo} is above maximum {hi}.",
                              "swap the bounds or move the lower cut below the upper one.")
    return {"feature": str(feature), "min": lo, "max": hi}


def filter_mask(table: pd.DataFrame, filters, keep_missing: bool = True) -> np.ndarray:
    """True for rows that pass every filter (bounds inclusive)."""
    keep = np.ones(len(table), dtype=bool)
    for f in filters:
        name = f["feature"]
        if name not in table.columns:
            raise SpotDetectError(f"The spots have no feature {name!r} (they have {numeric_features(table)}).",
                                  "filter on one of those, or measure the spots first (Gaussian fit) for "
                                  "sigma, SNR and amplitude.")
        v = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)
        ok = np.ones(len(v), dtype=bool)
        if f.get("min") is not None:
            ok &= v >= f["min"]
        if f.get("max") is not None:
            ok &= v <= f["max"]
        missing = np.isnan(v)
        keep &= np.where(missing, keep_missing, ok)
    return keep


def apply_filters(table: pd.DataFrame, filters, keep_missing: bool = True) -> pd.DataFrame:
    return table[filter_mask(table, filters, keep_missing)].reset_index(drop=True)


def histogram(values, bins: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Counts and bin edges of the finite values (one bin around a constant feature)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros(bins, dtype=np.int64), np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.histogram(v, bins=bins, range=(lo, hi))
