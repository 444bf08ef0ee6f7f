"""Issue 23: the TrackMate XML reader and the points table's units sidecar under fuzzing and hostile values.

Only the package's own error may come out of the readers, napari's reader declines (None) instead of
raising, positions are finite, and a feature named like a column of ours never replaces it.
"""

from __future__ import annotations

import json
import os
import random
import re

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect._reader import get_reader, get_trackmate_reader
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.io.exports import read_points_table, read_trackmate_xml, write_trackmate_xml

N = int(os.environ.get("SPOTDETECT_FUZZ_EXAMPLES", "150"))
HOSTILE = ["nan", "NaN", "inf", "-inf", "1e400", "-1e400", "", "abc", "-1", "1.5", "9" * 40, "-9" * 30, "0x10",
           "1e-400", " ", "None", "true", "2147483648", "-0", "\u00e9", "1,5"]


@pytest.fixture(scope="module")
def xml_text(tmp_path_factory):
    d = tmp_path_factory.mktemp("tm")
    spots = pd.DataFrame({"t": [0, 0, 1], "y": [3.0, 10.5, 7.0], "x": [4.0, 8.0, 12.25], "score": [0.9, 0.8, 0.7],
                          "snr": [5.0, 7.5, 2.0], "cell": [1, 2, 0]})
    return write_trackmate_xml(spots, d / "s.xml", pixel_size=0.5, image_shape=(20, 20)).read_text()


def _mutate(text: str, rng: random.Random) -> str:
    attrs = list(re.finditer(r'(\w+)="([^"]*)"', text))
    for _ in range(rng.randint(1, 4)):
        m = rng.choice(attrs)
        kind = rng.random()
        if kind < 0.6:
            new = f'{m.group(1)}="{rng.choice(HOSTILE)}"'
        elif kind < 0.8:
            new = ""  # attribute removed
        else:
            new = f'{rng.choice(["X", "T", "Z", "score", "id", "c", "name", "Y"])}="{rng.choice(HOSTILE)}"'
        text = text[:m.start()] + new + text[m.end():]
        attrs = list(re.finditer(r'(\w+)="([^"]*)"', text))
    if rng.random() < 0.1:
        text = text[: rng.randint(0, len(text))]  # truncated
    return text


def test_fuzzed_trackmate_files_give_our_error_or_a_sound_table(xml_text, tmp_path):
    rng = random.Random(0)
    kinds = set()
    for i in range(N):
        p = tmp_path / f"f{i}.xml"
        p.write_text(_mutate(xml_text, rng), encoding="utf-8")
        try:
            df = read_trackmate_xml(p)
        except SpotDetectError as err:
            kinds.add("refused")
            assert "Fix:" in str(err)
            assert get_trackmate_reader(str(p)) is None  # napari: declined, the next reader is tried
            continue
        kinds.add("read")
        coords = df[[c for c in ("z", "y", "x") if c in df.columns]].to_numpy(dtype=float)
        assert np.isfinite(coords).all() and df["t"].dtype.kind == "i" and (df["t"] >= 0).all()
        reader = get_trackmate_reader(str(p))
        assert reader is not None and reader(str(p))[0][2] == "points"
    assert kinds == {"read", "refused"}


def test_an_unknown_encoding_in_the_xml_declaration_is_our_error(xml_text, tmp_path):
    (tmp_path / "s.xml").write_text(xml_text.replace('encoding="UTF-8"', 'encoding="nan"', 1))
    with pytest.raises(SpotDetectError, match="cannot be read as XML"):
        read_trackmate_xml(tmp_path / "s.xml")
    assert get_trackmate_reader(str(tmp_path / "s.xml")) is None


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "abc"])
def test_non_finite_positions_are_refused(xml_text, tmp_path, value):
    text = xml_text.replace('POSITION_X="', f'POSITION_X="{value}" OLD_X="', 1)
    (tmp_path / "s.xml").write_text(text)
    with pytest.raises(SpotDetectError, match="POSITION_X"):
        read_trackmate_xml(tmp_path / "s.xml")


def test_features_named_x_or_t_never_replace_the_position_or_frame(xml_text, tmp_path):
    text = re.sub(r"<Spot ", '<Spot X="999" T="77" SCORE="-5" ', xml_text)
    (tmp_path / "s.xml").write_text(text)
    df = read_trackmate_xml(tmp_path / "s.xml")
    np.testing.assert_allclose(df["x"], [4.0, 8.0, 12.25])
    assert df["t"].tolist() == [0, 0, 1] and df["score"].tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert (df["feature_x"] == 999).all() and (df["feature_t"] == 77).all() and (df["feature_score"] == -5).all()


@pytest.mark.parametrize("units", ['{"coordinates": "micrometre", "pixel_size_zyx_um": "big"}', "[1, 2, 3]",
                                   '{"coordinates": "micrometre", "pixel_size_zyx_um": [null, 0, -1]}',
                                   '{"coordinates": 7}', "{not json", '{"pixel_size_zyx_um": [1, 2]}',
                                   '{"pixel_size_zyx_um": [true, "a", {}]}'])
def test_a_damaged_units_sidecar_is_our_error_and_napari_declines(tmp_path, units):
    pd.DataFrame({"x": [1.0], "y": [2.0], "x_px": [10.0], "y_px": [20.0]}).to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "p.units.json").write_text(units)
    with pytest.raises(SpotDetectError, match="p.units.json"):
        read_points_table(tmp_path / "p.csv")
    assert get_reader(str(tmp_path / "p.csv")) is None


def test_a_sound_units_sidecar_still_reads(tmp_path):
    pd.DataFrame({"x": [1.0], "y": [2.0], "x_px": [10.0], "y_px": [20.0]}).to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "p.units.json").write_text(json.dumps({"coordinates": "micrometre",
                                                       "pixel_size_zyx_um": [None, 0.1, 0.1]}))
    df = read_points_table(tmp_path / "p.csv")
    assert df.attrs["pixel_size"][1:] == (0.1, 0.1) and df["x"].tolist() == [10.0]
