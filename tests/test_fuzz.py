"""Fuzzing the readers of untrusted files: only the package's own errors may come out.

A small budget by default (CI); a larger one by hand: ``SPOTDETECT_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_spotdetect import load_model  # noqa: E402
from napari_spotdetect._reader import get_reader  # noqa: E402
from napari_spotdetect.core.errors import SpotDetectError  # noqa: E402
from napari_spotdetect.core.io.spots_io import read_spots_csv  # noqa: E402
from napari_spotdetect.core.weights import checksums, tf_table  # noqa: E402
from napari_spotdetect.core.weights import tf_bundle as tb  # noqa: E402

from . import tf_bundle_writer as tbw  # noqa: E402

BUDGET = settings(max_examples=int(os.environ.get("SPOTDETECT_FUZZ_EXAMPLES", "40")), deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], derandomize=True)

_CSV_ALPHABET = st.sampled_from(list("yxzct,;\"'\n\r\t .-+e0123456789nainfNAIF#abc") + ["\ufeff", "axis-", "index"])
csv_texts = st.lists(_CSV_ALPHABET, max_size=80).map("".join)


@BUDGET
@given(text=csv_texts)
def test_spot_csv_reader_raises_only_its_own_errors(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("csv") / "s.csv"
    p.write_text(text, encoding="utf-8")
    try:
        df = read_spots_csv(p)
    except SpotDetectError:
        return
    assert {"y", "x"} <= set(df.columns)
    coords = df[[c for c in ("t", "c", "z", "y", "x") if c in df.columns]].to_numpy(dtype=float)
    assert np.isfinite(coords).all()


@BUDGET
@given(data=st.binary(max_size=200))
def test_spot_csv_reader_on_random_bytes(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("csvb") / "s.csv"
    p.write_bytes(data)
    try:
        read_spots_csv(p)
    except SpotDetectError:
        pass


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                        max_size=3), max_leaves=6)


@BUDGET
@given(doc=json_values, raw=st.booleans())
def test_napari_csv_reader_with_any_provenance(tmp_path_factory, doc, raw):
    import json

    d = tmp_path_factory.mktemp("prov")
    (d / "s.csv").write_text("y,x\n1,2\n")
    (d / "s.provenance.json").write_text(json.dumps(doc) if not raw else str(doc))
    reader = get_reader(str(d / "s.csv"))
    [(data, kw, kind)] = reader(str(d / "s.csv"))
    assert kind == "points" and isinstance(kw["metadata"].get("spotdetect", {}), dict)


# -- TF bundle index -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle_index(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    prefix = tbw.write_bundle(d / "variables", {f"w{i}": np.arange(i + 3, dtype=np.float32) for i in range(6)})
    return prefix.with_name("variables.index").read_bytes(), d


def _with_block(raw: bytes, mutate) -> bytes:
    """``raw`` with its first data block mutated and its checksum made valid again (so parsing goes deeper)."""
    idx_off, idx_size = tf_table.index_handle(raw)
    handle = next(v for _, v in tf_table.block_entries(raw[idx_off:idx_off + idx_size]))
    off, p = tf_table.varint(handle, 0)
    size, _ = tf_table.varint(handle, p)
    block = bytearray(raw[off:off + size])
    mutate(block)
    block = bytes(block[:size]).ljust(size, b"\0")
    trailer = b"\0" + struct.pack("<I", checksums.mask_crc(checksums.crc32c(block + b"\0")))
    return raw[:off] + block + trailer + raw[off + size + 5:]


@BUDGET
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       fix_crc=st.booleans(), cut=st.integers(0, 400))
def test_tf_index_reader_raises_only_its_own_errors(bundle_index, tmp_path_factory, edits, fix_crc, cut):
    raw, d = bundle_index

    def mutate(buf):
        for pos, val in edits:
            buf[pos % len(buf)] = val

    if fix_crc:
        data = _with_block(raw, mutate)
    else:
        buf = bytearray(raw)
        mutate(buf)
        data = bytes(buf)[: len(buf) - (cut if cut < 60 else 0)]
    out = tmp_path_factory.mktemp("idx")
    for f in d.iterdir():
        if f.name.startswith("variables.data"):
            (out / f.name).write_bytes(f.read_bytes())
    (out / "variables.index").write_bytes(data)
    try:
        b = tb.TensorBundle(out / "variables.index")
        for k in b.keys():
            b.get(k)
    except SpotDetectError:
        pass


# -- .pt files -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pt_bytes(tiny_piscis):
    from napari_spotdetect.core.weights.native import model_to_state

    buf = io.BytesIO()
    torch.save(model_to_state(tiny_piscis), buf)
    return buf.getvalue()


@BUDGET
@given(edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.integers(0, 2000))
def test_pt_loader_on_damaged_bytes(pt_bytes, tmp_path_factory, edits, cut):
    buf = bytearray(pt_bytes)
    for pos, val in edits:
        buf[pos % len(buf)] = val
    p = tmp_path_factory.mktemp("pt") / "m.pt"
    p.write_bytes(bytes(buf[: len(buf) - cut]))
    try:
        load_model(p, device="cpu")
    except SpotDetectError:
        pass


plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats() | st.text(max_size=6)
    | st.builds(lambda n, v: torch.full((n,), v), st.integers(0, 4), st.floats(width=32)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


@BUDGET
@given(top=st.dictionaries(st.sampled_from(["format", "format_version", "arch", "config", "state_dict",
                                            "normalization", "tile_size", "threshold", "card", "name", "metadata",
                                            "fpn.encoder.stem.conv.0.weight", "model_state_dict"]),
                           plain_values, max_size=8),
       ours=st.booleans())
def test_pt_loader_on_structured_garbage(tmp_path_factory, top, ours):
    if ours:
        top = {**top, "format": "napari-spotdetect", "format_version": 1}
    p = tmp_path_factory.mktemp("pts") / "m.pt"
    torch.save(top, p)
    try:
        load_model(p, device="cpu")
    except SpotDetectError:
        pass
