"""The numpy-only TF tensor-bundle reader: checksums, a round trip through our writer, damaged files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from napari_spotdetect.core.errors import ModelFileError, SpotDetectError
from napari_spotdetect.core.weights import checksums
from napari_spotdetect.core.weights import tf_bundle as tb

from ... import tf_bundle_writer as tbw


@pytest.fixture(scope="module")
def mhybrid():
    from napari_spotdetect.core.weights.deepspot_fetch import fetch_deepspot_weights

    try:
        return fetch_deepspot_weights()
    except SpotDetectError as err:
        pytest.skip(f"the published DeepSpot weights could not be downloaded from PyPI: {err}")


# -- CRC32C --------------------------------------------------------------------------------------------
def test_crc32c_known_values():
    assert checksums.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert checksums.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vectors
    assert checksums.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert checksums.crc32c(bytes(range(32))) == 0x46DD794E
    assert checksums.crc32c(b"") == 0


@pytest.mark.parametrize("n", [8191, 8192, 12345, 1 << 16, 300001])
def test_crc32c_chunked_path_equals_bytewise(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    bytewise = checksums._advance(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert checksums.crc32c(data) == bytewise
    assert checksums.crc32c(np.frombuffer(data, np.uint8)) == bytewise
    cut = n // 3
    assert checksums.crc32c(data[cut:], checksums.crc32c(data[:cut])) == bytewise


def test_mask_round_trip_and_differs():
    for c in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert checksums.unmask_crc(checksums.mask_crc(c)) == c
    assert checksums.mask_crc(0xE3069283) != 0xE3069283


# -- writer -> reader round trip --------------------------------------------------------------------------
def _tensors():
    rng = np.random.default_rng(0)
    # > 16 keys with shared prefixes: restarts and prefix compression
    out = {f"layer_with_weights-{i}/kernel/.ATTRIBUTES/VARIABLE_VALUE":
           rng.normal(size=(3, 3, 2, i + 1)).astype(np.float32) for i in range(20)}
    out.update({
        "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE": np.array(14062, dtype=np.int64),
        "big": rng.normal(size=(70, 300)).astype(np.float32),  # > 8 kB: the chunked CRC path
        "f64": rng.normal(size=(4,)),
        "u8": np.arange(7, dtype=np.uint8),
        "i32": np.array([[-1, 2], [3, -4]], dtype=np.int32),
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
    })
    return out


@pytest.mark.parametrize("shards", [1, 3])
def test_round_trip(tmp_path, shards):
    tensors = _tensors()
    prefix = tbw.write_bundle(tmp_path / "variables" / "variables", tensors, num_shards=shards)
    bundle = tb.TensorBundle(tmp_path)  # the SavedModel-style folder that holds variables/
    assert bundle.num_shards == shards
    assert sorted(bundle.keys()) == sorted(tensors)
    for name, arr in tensors.items():
        got = bundle.get(name)
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
    assert tb.TensorBundle(str(prefix) + ".index").keys() == bundle.keys()
    assert tb.TensorBundle(tmp_path / "variables").keys() == bundle.keys()  # the variables/ folder itself
    assert bundle.entries["big"].crc32c is not None


# -- damaged and foreign files ----------------------------------------------------------------------------
@pytest.fixture()
def written(tmp_path):
    prefix = tbw.write_bundle(tmp_path / "variables" / "variables", _tensors())
    return prefix, prefix.with_name("variables.index"), prefix.with_name("variables.data-00000-of-00001")


def test_truncated_index(written):
    prefix, index, _ = written
    raw = index.read_bytes()
    index.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated|not a TensorFlow checkpoint index"):
        tb.TensorBundle(prefix)


def test_truncated_data_file(written):
    prefix, _, data = written
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) - 100])
    bundle = tb.TensorBundle(prefix)  # the index is intact
    with pytest.raises(ModelFileError, match="truncated"):
        bundle.get("big")


def test_wrong_tensor_checksum(written):
    prefix, _, data = written
    bundle = tb.TensorBundle(prefix)
    entry = bundle.entries["big"]
    raw = bytearray(data.read_bytes())
    raw[entry.offset + entry.size // 2] ^= 0x01  # one flipped bit
    data.write_bytes(bytes(raw))
    bundle = tb.TensorBundle(prefix)
    with pytest.raises(ModelFileError, match="checksum mismatch for tensor 'big'"):
        bundle.get("big")
    bundle.get("f64")  # other tensors still read
    assert bundle.get("big", verify=False).shape == (70, 300)


def test_damaged_index_block(written):
    prefix, index, _ = written
    raw = bytearray(index.read_bytes())
    raw[10] ^= 0x40  # inside the first (data) block
    index.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum"):
        tb.TensorBundle(prefix)


def test_foreign_files(tmp_path):
    var = tmp_path / "variables"
    var.mkdir()
    (var / "variables.index").write_bytes(b"PK\x03\x04" + bytes(200))  # e.g. a zip
    with pytest.raises(ModelFileError, match="not a TensorFlow checkpoint index"):
        tb.TensorBundle(tmp_path)
    (var / "variables.index").write_bytes(b"")
    with pytest.raises(ModelFileError):
        tb.TensorBundle(tmp_path)
    with pytest.raises(ModelFileError, match="No TensorFlow checkpoint index"):
        tb.TensorBundle(tmp_path / "nowhere")
    (tmp_path / "pbonly").mkdir()
    with pytest.raises(ModelFileError, match="pbonly/variables/variables.index"):
        tb.TensorBundle(tmp_path / "pbonly")


def test_missing_shard(written):
    prefix, _, data = written
    data.unlink()
    with pytest.raises(ModelFileError, match="missing"):
        tb.TensorBundle(prefix).get("f64")


def test_table_without_bundle_header(tmp_path):
    """A valid LevelDB table that is not a tensor bundle (no empty-key header) is refused."""
    index = tmp_path / "x.index"
    with open(index, "wb") as f:
        data = tbw.append_block(f, tbw.enc_block([(b"a", b"1")]))
        meta = tbw.append_block(f, tbw.enc_block([]))
        idx = tbw.append_block(f, tbw.enc_block([(b"b", data)]))
        footer = meta + idx
        f.write(footer + bytes(40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57))
    with pytest.raises(ModelFileError, match="not a TensorFlow tensor bundle"):
        tb.TensorBundle(index)


# -- the published checkpoint ---------------------------------------------------------------------------
def test_reads_every_mhybrid_entry_with_checksums(mhybrid):
    bundle = tb.TensorBundle(mhybrid)
    assert len(bundle.entries) == 874 and bundle.num_shards == 1
    values = {k: bundle.get(k) for k in bundle.keys()}  # every CRC verified, slots and strings included
    assert int(values["optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"]) == 14062
    weights = [k for k in values if k.startswith("layer_with_weights-") and ".OPTIMIZER_SLOT" not in k]
    assert len(weights) == 368
    assert sum(values[k].size for k in weights) == 4_037_249
    graph = values["_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert isinstance(graph, list) and len(graph) == 1 and len(graph[0]) > 1000
    assert values["layer_with_weights-98/kernel/.ATTRIBUTES/VARIABLE_VALUE"].shape == (3, 3, 256, 128)
