"""Measurements that outlive a threshold move: Gaussian fits, cells, QC marks stay with their spots.

A new threshold or contrast floor gives a detection layer a fresh spot table from the cached candidates,
which has none of the columns the Measure panel (or QC) added. The spots a new threshold keeps are the same
candidates at the same coordinates, so their measured columns are carried over by position; spots that come
back (a lower threshold) get NaN or None there: *unmeasured*, until fitted or counted again. Qt-free.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import layer_keys as K

#: provenance entry: how many spots of the layer have no values in its measured columns
UNMEASURED = "n_unmeasured"


def previous_spots(layer) -> tuple[np.ndarray, pd.DataFrame]:
    """Every spot the layer holds with its features, the ones a feature filter hides included."""
    state = layer.metadata.get(K.FILTERS)
    if state is not None and getattr(state, "data", None) is not None:
        return np.asarray(state.data), state.features
    return np.asarray(layer.data), layer.features


def carry_measurements(layer, coords: np.ndarray, features: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``features`` of the new spots at ``coords`` plus the layer's measured columns; returns (features, how
    many new spots have no measurement). Columns the new table has already are its own (score, intensity)."""
    old_coords, old = previous_spots(layer)
    extra = [c for c in old.columns if c not in features.columns]
    if not extra or len(features) == 0:
        return features, 0
    row = _matching_rows(old_coords, np.asarray(coords))
    found = row >= 0
    out = features.copy()
    for c in extra:
        col = old[c].reset_index(drop=True)
        if pd.api.types.is_bool_dtype(col):  # fit_ok: a fit that never ran is not a good fit
            values = np.zeros(len(out), dtype=bool)
            values[found] = col.to_numpy()[row[found]]
        elif pd.api.types.is_numeric_dtype(col):
            values = np.full(len(out), np.nan)
            values[found] = col.to_numpy(dtype=np.float64)[row[found]]
        else:
            values = np.full(len(out), None, dtype=object)
            values[found] = col.to_numpy(dtype=object)[row[found]]
        out[c] = values
    return out, int((~found).sum())


def _matching_rows(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """For each new coordinate row, the old row at the same place (to 1e-3 px), or -1."""
    if len(old) == 0 or old.shape[1:] != new.shape[1:]:
        return np.full(len(new), -1)
    keys_old = pd.MultiIndex.from_arrays(list(np.round(old, 3).T))
    keep = ~keys_old.duplicated()
    index = pd.MultiIndex.from_arrays(list(np.round(old[keep], 3).T))
    where = index.get_indexer(pd.MultiIndex.from_arrays(list(np.round(new, 3).T)))
    return np.where(where >= 0, np.flatnonzero(keep)[np.maximum(where, 0)], -1)
