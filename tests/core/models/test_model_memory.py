"""Issue 23: model files cost no more memory than the model they claim to be before they are refused.

Driven through ``load_model`` (what the CLI, the panel and the API call) on crafted files; memory is
measured with tracemalloc (numpy and torch CPU allocations made from Python are traced by numpy only, so
the TF case, which decodes with numpy, is measured; the torch case is refused before torch reads anything).
"""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from napari_spotdetect import load_model
from napari_spotdetect.core.errors import ModelFileError

from ...tf_bundle_writer import write_bundle


def test_a_re_zipped_pt_whose_parts_unpack_to_much_more_is_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"format": "napari-spotdetect", "w": torch.zeros(8_000_000)}, plain)  # 32 MB of zeros
    small = tmp_path / "small.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert small.stat().st_size < 1_000_000
    with pytest.raises(ModelFileError, match="compressed parts"):
        load_model(small, device="cpu")


@pytest.mark.slow
def test_unknown_tensor_names_are_refused_before_any_tensor_is_decoded(tmp_path):
    big = np.zeros((10_000_000,), np.float32)  # 40 MB under names the DeepSpot network does not have
    write_bundle(tmp_path / "m" / "variables" / "variables",
                 {"layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE": big,
                  "layer_with_weights-999/kernel/.ATTRIBUTES/VARIABLE_VALUE": big})
    del big
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="not the DeepSpot"):
            load_model(tmp_path / "m", device="cpu")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 25e6, f"{peak / 1e6:.0f} MB allocated before the refusal"


def test_a_string_tensor_claiming_more_strings_than_bytes_is_refused(tmp_path):
    from napari_spotdetect.core.weights import tf_bundle as tb

    prefix = write_bundle(tmp_path / "variables" / "variables", {"k": np.zeros(4, np.float32)})
    b = tb.TensorBundle(prefix.with_name("variables.index"))
    e = b.entries["k"]
    b.entries["k"] = tb.BundleEntry("k", 7, (10**12,), e.shard, e.offset, e.size, None)  # DT_STRING = 7
    with pytest.raises(ModelFileError, match="claims"):
        b.get("k")


def test_a_piscis_file_with_flipped_bytes_inside_a_weight_is_refused(tmp_path, piscis_fixture_file):
    state = torch.load(piscis_fixture_file, weights_only=True, map_location="cpu")
    name = "fpn.encoder.blocks.1.1.block.0.conv.0.weight"
    bits = state[name].flatten().view(torch.int32).clone()
    bits[100:104] ^= -1  # 16 bytes flipped, as a bad copy or disk does
    state[name] = bits.view(torch.float32).reshape(state[name].shape)
    torch.save(state, tmp_path / "flipped.pt")
    with pytest.raises(ModelFileError, match="flipped bytes") as err:
        load_model(tmp_path / "flipped.pt", device="cpu")
    assert name in str(err.value)
    load_model(piscis_fixture_file, device="cpu")  # the intact file still loads
