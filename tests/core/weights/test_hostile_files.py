"""Hostile and damaged model files: nothing runs, nothing outside the cache is written, nothing hangs or
allocates gigabytes, and only the package's own errors come out."""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile

import pytest
import torch

from napari_spotdetect import load_model
from napari_spotdetect.core.errors import ModelFileError, SpotDetectError
from napari_spotdetect.core.weights import checksums, deepspot_fetch, tf_table
from napari_spotdetect.core.weights.native import model_to_state, save_model
from napari_spotdetect.core.weights.tf_bundle import TensorBundle

from ... import tf_bundle_writer as tbw
from ...tf_bundle_writer import write_bundle


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pt_whose_pickle_runs_code_is_refused_and_says_why(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"fpn.encoder.stem.conv.0.weight": _RunsCode()}, p)
    with pytest.raises(ModelFileError) as e:
        load_model(p, device="cpu")
    msg = str(e.value)
    assert "holds Python code" in msg and "malicious" in msg and "not loaded" in msg
    assert "weights_only" not in msg


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_device_files_are_refused_at_once():
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model("/dev/zero", device="cpu")


def _zip_with_declared_size(path, declared: int):
    """A torch-like zip whose one member claims ``declared`` bytes uncompressed (patched central directory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data/0", b"\0" * 16)
    raw = bytearray(path.read_bytes())
    cd = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, cd + 24, declared)  # uncompressed size in the central directory
    path.write_bytes(bytes(raw))


def test_small_pt_that_would_unpack_to_gigabytes_is_refused_before_reading(tmp_path):
    p = tmp_path / "bomb.pt"
    _zip_with_declared_size(p, 0xFFFFFFF0)
    assert p.stat().st_size < 1000
    with pytest.raises(ModelFileError, match="would unpack to 4.0 GB"):
        load_model(p, device="cpu")


def test_non_zip_torch_files_are_refused(tmp_path):
    p = tmp_path / "old.pt"
    p.write_bytes(b"\x80\x02" + b"\0" * 100)
    with pytest.raises(ModelFileError, match="not a model file torch can read"):
        load_model(p, device="cpu")


@pytest.fixture
def native_state(tiny_piscis):
    return model_to_state(tiny_piscis)


def _save(obj, path):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("mutate, words", [
    (lambda s: s["state_dict"].update({next(iter(s["state_dict"])): "text"}), "not a tensor"),
    (lambda s: s["state_dict"].update({next(iter(s["state_dict"])): [1, 2]}), "not a tensor"),
    (lambda s: next(iter(s["state_dict"].values())).fill_(float("nan")), "NaN or infinite"),
    (lambda s: s.update(normalization="bogus"), "unknown normalisation"),
    (lambda s: s.update(card=[1, 2]), "card that is not a mapping"),
    (lambda s: s.update(threshold=float("nan")), "invalid threshold"),
    (lambda s: s.update(state_dict=[1, 2]), "lacks state_dict"),
])
def test_malformed_native_files_give_model_file_errors(tmp_path, native_state, mutate, words):
    mutate(native_state)
    with pytest.raises(ModelFileError, match=words):
        load_model(_save(native_state, tmp_path / "m.pt"), device="cpu")


def _piscis_state(tiny_piscis):
    state = {k: v.clone() for k, v in tiny_piscis.net.state_dict().items()}
    state["metadata"] = {"adjustment": "standardize", "input_size": (64, 64), "dilation_iterations": 1,
                         "channels": 1}
    return state


@pytest.mark.parametrize("metadata, words", [
    ([1, 2], "not a mapping"),
    ("standardize", "not a mapping"),
    ({"adjustment": "bogus"}, "unknown adjustment"),
    ({"channels": 10**9}, "malformed"),
    ({"input_size": (1, 2, 3)}, "malformed"),
    ({"dilation_iterations": "x"}, "malformed"),
])
def test_malformed_piscis_metadata(tmp_path, tiny_piscis, metadata, words):
    state = _piscis_state(tiny_piscis)
    state["metadata"] = metadata
    with pytest.raises(ModelFileError, match=words):
        load_model(_save(state, tmp_path / "p.pt"), device="cpu")


def test_zero_stride_giant_view_is_refused_without_allocating(tmp_path, native_state):
    key = next(iter(native_state["state_dict"]))
    native_state["state_dict"][key] = torch.zeros(1).as_strided((1 << 20, 1 << 20), (0, 0))  # 10^12 values, 4 bytes
    with pytest.raises(ModelFileError, match="more than any spot-detection model"):
        load_model(_save(native_state, tmp_path / "m.pt"), device="cpu")


def test_piscis_file_with_a_non_tensor_weight(tmp_path, tiny_piscis):
    state = _piscis_state(tiny_piscis)
    state["fpn.encoder.stem.conv.0.weight"] = "oops"
    with pytest.raises(ModelFileError, match="not a tensor"):
        load_model(_save(state, tmp_path / "p.pt"), device="cpu")


def test_device_problem_is_reported_alone(tmp_path, tiny_piscis):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    path = save_model(tiny_piscis, tmp_path / "m.pt")
    with pytest.raises(SpotDetectError) as e:
        load_model(path, device="cuda")
    msg = str(e.value)
    assert "CUDA" in msg and msg.count("Fix:") == 1 and "does not fit" not in msg


# -- TF bundles ---------------------------------------------------------------------------------------------
def _bundle(tmp_path):
    import numpy as np

    prefix = write_bundle(tmp_path / "variables" / "variables",
                          {f"layer{i}/kernel": np.full((4, 4), i, np.float32) for i in range(30)})
    return prefix.with_name("variables.index")


def test_index_listing_one_data_block_many_times_is_refused_fast(tmp_path):
    """The quadratic case: index entries that all point at the same data block."""
    index = _bundle(tmp_path)
    raw = index.read_bytes()
    idx_off, idx_size = tf_table.index_handle(raw)
    handle = next(v for _, v in tf_table.block_entries(raw[idx_off:idx_off + idx_size]))
    many = tbw.enc_block([(b"k%06d" % i, handle) for i in range(2000)])
    body = raw[:idx_off]
    new_idx = tbw.enc_varint(len(body)) + tbw.enc_varint(len(many))
    block = many + b"\0" + struct.pack("<I", checksums.mask_crc(checksums.crc32c(many + b"\0")))
    meta = tbw.enc_varint(0) + tbw.enc_varint(0)
    foot = meta + new_idx
    index.write_bytes(body + block + foot + b"\0" * (40 - len(foot)) + struct.pack("<Q", tf_table.TABLE_MAGIC))
    with pytest.raises(ModelFileError, match="twice"):
        TensorBundle(index)


def test_tensor_claiming_huge_size_is_refused(tmp_path):
    from napari_spotdetect.core.weights import tf_bundle as tb

    index = _bundle(tmp_path)
    b = TensorBundle(index)
    name = b.keys()[0]
    b.entries[name] = tb.BundleEntry(name, 1, (1 << 20, 1 << 20), 0, 0, 1 << 42, None)
    with pytest.raises(ModelFileError, match="claims"):
        b.get(name)


# -- the DeepSpot wheel -------------------------------------------------------------------------------------
def _fake_wheel(path, files: dict, extra: dict):
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(deepspot_fetch.WHEEL_PREFIX + rel, data)
        for name, data in extra.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def fake_mhybrid(monkeypatch):
    files = {rel: f"content of {rel}".encode() for rel in deepspot_fetch.MHYBRID_SHA256}
    monkeypatch.setattr(deepspot_fetch, "MHYBRID_SHA256",
                        {rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()})
    return files


def test_wheel_extraction_never_writes_outside_the_cache(tmp_path, monkeypatch, fake_mhybrid):
    outside = tmp_path / "outside"
    hostile = {deepspot_fetch.WHEEL_PREFIX + "/" + str(outside / "abs.txt"): b"x",
               deepspot_fetch.WHEEL_PREFIX + "../../../../escape.txt": b"x",
               deepspot_fetch.WHEEL_PREFIX + "variables/../../up.txt": b"x",
               "../top.txt": b"x"}
    wheel = _fake_wheel(tmp_path / "w.whl", fake_mhybrid, hostile)
    monkeypatch.setattr(deepspot_fetch, "_download_wheel", lambda dest, timeout: wheel)
    folder = deepspot_fetch.fetch_deepspot_weights(tmp_path / "cache")
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert written == sorted([".complete", *fake_mhybrid])
    assert not outside.exists()
    assert not any(p.name in ("abs.txt", "escape.txt", "up.txt", "top.txt") for p in tmp_path.rglob("*"))


def test_wheel_with_a_wrong_file_leaves_no_model_in_the_cache(tmp_path, monkeypatch, fake_mhybrid):
    bad = dict(fake_mhybrid, **{"saved_model.pb": b"tampered"})
    wheel = _fake_wheel(tmp_path / "w.whl", bad, {})
    monkeypatch.setattr(deepspot_fetch, "_download_wheel", lambda dest, timeout: wheel)
    with pytest.raises(SpotDetectError, match="differs from the published"):
        deepspot_fetch.fetch_deepspot_weights(tmp_path / "cache")
    assert not deepspot_fetch.deepspot_folder(tmp_path / "cache").exists()


def test_wheel_member_larger_than_the_cap_is_refused(tmp_path, monkeypatch, fake_mhybrid):
    monkeypatch.setattr(deepspot_fetch, "MAX_MEMBER_BYTES", 8)
    wheel = _fake_wheel(tmp_path / "w.whl", fake_mhybrid, {})
    with pytest.raises(SpotDetectError, match="far more than|more than"):
        deepspot_fetch.extract_mhybrid(wheel, tmp_path / "staging")
