"""Reader for spot tables (CSV): coordinates become a Points layer, the other columns its features.

Any CSV reaches this reader, so it answers None for tables that hold no spot coordinates and napari
tries the next reader.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import layer_keys as K
from .core.spots_io import COORD_ORDER, NotASpotTable, provenance_path, read_spots_csv
from .widgets.layers import TRUTH_COLOUR

#: ring colour of a spot table that is not ground truth (none of the QC legend's colours either)
SPOTS_COLOUR = "#60b0ff"


def get_reader(path):
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path))
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    try:
        df = read_spots_csv(path)
    except (NotASpotTable, ValueError, OSError):
        return None
    return lambda _path: [_points_layer(df, path)]


def _points_layer(df, path: Path):
    axes = [c for c in COORD_ORDER if c in df.columns]
    coords = df[axes].to_numpy(dtype=float)
    features = df.drop(columns=axes).reset_index(drop=True)
    metadata = {K.AXES: "".join(axes), K.SOURCE_FILE: str(path)}
    prov = provenance_path(path)
    if prov.is_file():
        try:
            metadata[K.PROVENANCE] = {**json.loads(prov.read_text()), "layer_axes": "".join(axes)}
        except ValueError:
            pass
    truth = (metadata.get(K.PROVENANCE) or {}).get("ground_truth")
    if isinstance(truth, dict) and truth.get("image"):  # saved by 'Correct spots': it is ground truth again
        metadata[K.TRUTH] = {"image": str(truth["image"])}
    kw = {"name": f"{'truth' if K.TRUTH in metadata else 'spots'}: {path.stem}", "features": features,
          "metadata": metadata, "size": 7, "face_color": "transparent",
          "border_color": TRUTH_COLOUR if K.TRUTH in metadata else SPOTS_COLOUR, "border_width": 0.18}
    return coords, kw, "points"
