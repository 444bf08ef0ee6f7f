"""The fast part of the fault matrix (issue 15): bad inputs through the API and the CLI, each a clear error.

Every case must end in the package's own error (``SpotDetectError``) whose message names the problem and the
fix, or, through the CLI, in exit status 2 and an ``error: ... Fix: ...`` line without a traceback. Inputs that
are unusual but fine (memory-mapped, dask, non-contiguous, constant, Windows line endings) must just work.
The slow part (kill -9 during training, full disks) is benchmarks/fault_matrix.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from napari_spotdetect import load_model
from napari_spotdetect.cli import main
from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.io.spots_io import read_spots_csv
from napari_spotdetect.core.weights.native import save_model

RNG = np.random.default_rng(0)
PLANE = RNG.normal(100, 5, (64, 64)).astype(np.float32)
NO_GPU = not torch.cuda.is_available()

# (case, image, keyword arguments of detect, words the message must hold)
API_CASES = [
    ("boolean mask", PLANE > 100, {}, "boolean"),
    ("complex values", PLANE.astype(np.complex64), {}, "complex"),
    ("strings", np.array([["a", "b"], ["c", "d"]]), {}, "not numbers"),
    ("NaN pixel", np.where(np.eye(64, dtype=bool), np.nan, PLANE).astype(np.float32), {}, "NaN or infinite"),
    ("inf pixel", np.where(np.eye(64, dtype=bool), np.inf, PLANE).astype(np.float32), {}, "NaN or infinite"),
    ("empty", np.zeros((0, 64), np.float32), {}, "empty"),
    ("1x1", np.ones((1, 1), np.float32), {}, "only 1 x 1"),
    ("1xN", np.ones((1, 50), np.float32), {}, "only 1 x 50"),
    ("6-D", np.zeros((1, 1, 1, 1, 8, 8), np.float32), {}, "6 dimensions"),
    ("3-D without axes", np.stack([PLANE] * 3), {}, "nothing says what they are"),
    ("4-D without axes", np.stack([np.stack([PLANE] * 2)] * 2), {}, "nothing says what they are"),
    ("duplicate axes letter", np.stack([PLANE] * 3), {"axes": "yyx"}, "not valid"),
    ("unknown axes letter", np.stack([PLANE] * 3), {"axes": "qyx"}, "not valid"),
    ("axes too short", np.stack([PLANE] * 3), {"axes": "yx"}, "name 2 dimensions"),
    ("plane before z", np.stack([PLANE] * 5), {"axes": "yxz"}, "do not end with the image plane"),
    ("RGB-like without axes", np.stack([PLANE] * 3, -1), {}, "RGB"),
    ("None", None, {}, "No image"),
    ("threshold NaN", PLANE, {"threshold": float("nan")}, "not a number"),
    ("threshold -1", PLANE, {"threshold": -1.0}, "outside the model's score range"),
    ("threshold 1.5", PLANE, {"threshold": 1.5}, "outside the model's score range"),
    ("threshold text", PLANE, {"threshold": "high"}, "not a number"),
    ("unknown device", PLANE, {"device": "gpu9"}, "Unknown device"),
    ("tile 8", PLANE, {"tile_size": 8}, "at least 32"),
    ("tile not multiple", PLANE, {"tile_size": 100}, "multiple of 8"),
    ("batch 0", PLANE, {"batch_size": 0}, "Batch size"),
    ("batch -1", PLANE, {"batch_size": -1}, "Batch size"),
    ("min_distance 0", PLANE, {"min_distance": 0}, "Min distance"),
    ("overlap 0.7", PLANE, {"overlap": 0.7}, "overlap"),
]
if NO_GPU:
    API_CASES.append(("cuda without GPU", PLANE, {"device": "cuda"}, "no CUDA GPU"))


@pytest.mark.parametrize("case, image, kw, words", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_is_a_clear_error(tiny_piscis, case, image, kw, words):
    with pytest.raises(SpotDetectError) as e:
        detect(image, tiny_piscis, **kw)
    msg = str(e.value)
    assert words in msg and " Fix: " in msg, msg


@pytest.mark.slow
def test_huge_sparse_image_is_refused_before_allocating(tiny_piscis):
    huge = np.broadcast_to(np.float32(0), (200_000, 200_000))  # 160 GB if it were real; here no memory at all
    with pytest.raises(SpotDetectError, match="dask or zarr"):
        detect(huge, tiny_piscis)
    with pytest.raises(SpotDetectError, match="fewer planes"):  # the maps alone would not fit either
        detect(np.broadcast_to(np.float32(0), (5000, 20_000, 20_000)), tiny_piscis, axes="zyx", keep_maps=True)


def test_unusual_but_valid_arrays_give_the_same_spots(tiny_piscis, tmp_path):
    import dask.array as da

    img = RNG.normal(100, 5, (96, 80)).astype(np.float32)
    ref = detect(img, tiny_piscis, threshold=0.05).spots[["y", "x"]].to_numpy()
    np.save(tmp_path / "m.npy", img)
    wide = np.zeros((96, 160), np.float32)
    wide[:, ::2] = img
    for other in (np.load(tmp_path / "m.npy", mmap_mode="r"), da.from_array(img, chunks=(32, 40)), wide[:, ::2],
                  np.asfortranarray(img), img.astype(">f4")):
        got = detect(other, tiny_piscis, threshold=0.05).spots[["y", "x"]].to_numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_constant_and_integer_images_are_fine(tiny_piscis):
    for img in (np.zeros((64, 64), np.uint16), np.full((64, 64), 7, np.int8), np.full((64, 64), 1e-3)):
        assert len(detect(img, tiny_piscis).spots) >= 0


MODEL_CASES = [
    ("missing file", lambda d: d / "nope.pt", "does not exist"),
    ("empty file", lambda d: _write(d / "e.pt", b""), "empty"),
    ("text file", lambda d: _write(d / "t.pt", b"hello world, not a model"), "not a model file"),
    ("truncated zip", lambda d: _write(d / "z.pt", b"PK\x03\x04" + b"\0" * 50), "cannot be read"),
    ("folder without SavedModel", lambda d: d, "not a TensorFlow SavedModel"),
    ("TF index file alone", lambda d: _write(d / "variables.index", b"x" * 64), "one file of a TensorFlow"),
    ("msgpack legacy", lambda d: _write(d / "flax", bytes([0x81, 0xA3]) + b"abc"), "legacy piscis"),
]
if os.path.exists("/dev/zero"):
    MODEL_CASES.append(("device file", lambda d: "/dev/zero", "not a regular file"))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case, make, words", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_sources_are_clear_errors(tmp_path, case, make, words):
    with pytest.raises(SpotDetectError) as e:
        load_model(make(tmp_path), device="cpu")
    assert words in str(e.value) and " Fix: " in str(e.value)


CSV_ERRORS = [
    ("semicolons", "y;x\n1;2\n", "no y/x coordinate"),
    ("NaN coordinate", "y,x\n1,2\nnan,4\n", "NaN or infinite"),
    ("inf coordinate", "y,x\ninf,2\n", "NaN or infinite"),
    ("unmatched quote", 'y,x\n"1,2\n', "not a well-formed CSV"),
    ("junk number headerless", "1,2\n3,x\n", "not a well-formed CSV"),
    ("text coordinate", "y,x\n1,2\na,b\n", "not numeric"),
    ("four unnamed columns", "1,2,3,4\n", "4 unnamed columns"),
    ("no coordinates", "name,value\na,1\n", "no y/x"),
]


@pytest.mark.parametrize("case, text, words", CSV_ERRORS, ids=[c[0] for c in CSV_ERRORS])
def test_malformed_csvs_are_clear_errors(tmp_path, case, text, words):
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(SpotDetectError) as e:
        read_spots_csv(tmp_path / "s.csv")
    assert words in str(e.value) and " Fix: " in str(e.value)


@pytest.mark.parametrize("raw, n", [(b"", 0), (b"y,x\n", 0), (b"\xef\xbb\xbf", 0), (b"y,x\r\n1,2\r\n", 1),
                                    (b"\xef\xbb\xbfy,x\n1,2\n", 1)])
def test_edge_csvs_that_are_fine(tmp_path, raw, n):
    (tmp_path / "s.csv").write_bytes(raw)
    assert len(read_spots_csv(tmp_path / "s.csv")) == n


@pytest.mark.slow
def test_a_million_rows_read(tmp_path):
    pts = RNG.uniform(0, 1000, (10**6, 2))
    pd.DataFrame(pts, columns=["y", "x"]).to_csv(tmp_path / "big.csv", index=False, float_format="%.2f")
    assert len(read_spots_csv(tmp_path / "big.csv")) == 10**6


# -- through the command line ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(tmp_path_factory, tiny_piscis):
    return save_model(tiny_piscis, tmp_path_factory.mktemp("model") / "tiny.pt")


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _files(d, **arrays):
    for name, arr in arrays.items():
        if name.endswith("_tif"):
            tifffile.imwrite(d / (name[:-4] + ".tif"), arr)
        else:
            np.save(d / f"{name}.npy", arr)
    return d


CLI_CASES = [
    ("threshold -1", ["--threshold", "-1"], "outside the model's score range"),
    ("threshold 1.5", ["--threshold", "1.5"], "outside the model's score range"),
    ("threshold nan", ["--threshold", "nan"], "not a number"),
    ("axes yxz", ["--axes", "yxz"], "do not end with the image plane"),
    ("tile 8", ["--tile-size", "8", "8"], "at least 32"),
    ("batch -1", ["--batch-size", "-1"], "Batch size"),
    ("min distance 0", ["--min-distance", "0"], "Min distance"),
    ("unknown device", ["--device", "tpu"], "Unknown device"),
]


@pytest.mark.parametrize("case, extra, words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_predict_bad_settings(tmp_path, capsys, model_file, case, extra, words):
    _files(tmp_path, a=np.stack([PLANE] * 3))
    code, err = _cli(["predict", tmp_path / "a.npy", "--model", model_file, "--out", tmp_path / "o",
                      *(["--axes", "zyx"] if "--axes" not in extra else []), *extra], capsys)
    assert code == 2 and words in err and "Fix:" in err and "Traceback" not in err, err
    assert not (tmp_path / "o" / "a.csv").exists()


def test_cli_axes_that_do_not_fit_an_image_fail_that_image(tmp_path, capsys, model_file):
    _files(tmp_path, a=np.stack([PLANE] * 3))
    code, err = _cli(["predict", tmp_path / "a.npy", "--model", model_file, "--out", tmp_path / "o",
                      "--axes", "tczyx"], capsys)
    assert code == 1 and "name 5 dimensions" in err and "Fix:" in err and "Traceback" not in err, err
    assert not (tmp_path / "o" / "a.csv").exists()


def test_cli_3d_tiff_without_metadata_or_axes_names_the_choices_in_cli_syntax(tmp_path, capsys, model_file):
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([PLANE] * 5))
    code, err = _cli(["predict", tmp_path / "stack.tif", "--model", model_file, "--out", tmp_path / "o"], capsys)
    assert code == 1 and "stack.tif" in err  # a batch lists the images that failed and why, then exits 1
    assert "--axes zyx" in err and "--axes cyx" in err and "--axes tyx" in err and "axes='" not in err


def test_cli_reads_axes_and_pixel_size_from_imagej_metadata(tmp_path, capsys, model_file):
    stack = np.stack([PLANE] * 3).astype(np.float32)
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, resolution=(10, 10),
                     metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"})
    code, err = _cli(["predict", tmp_path / "z.tif", "--model", model_file, "--out", tmp_path / "o",
                      "--threshold", "0.05"], capsys)
    assert code == 0, err
    assert "axes zyx (from the file's metadata)" in err
    prov = json.loads((tmp_path / "o" / "z.provenance.json").read_text())
    assert prov["axes"] == "zyx" and prov["pixel_size"] == {"x": 0.1, "y": 0.1, "z": 0.5, "unit": "um"}
    assert "z" in pd.read_csv(tmp_path / "o" / "z.csv").columns  # merged across planes, not a time series


def test_cli_channels_file_is_not_a_time_series(tmp_path, capsys, model_file):
    tifffile.imwrite(tmp_path / "cf.tif", np.stack([PLANE, PLANE]).astype(np.float32), imagej=True,
                     metadata={"axes": "CYX"})
    code, err = _cli(["predict", tmp_path / "cf.tif", "--model", model_file, "--out", tmp_path / "o",
                      "--threshold", "0.05"], capsys)
    assert code == 0, err
    cols = pd.read_csv(tmp_path / "o" / "cf.csv").columns
    assert "c" in cols and "t" not in cols


def test_cli_corrupt_tiff(tmp_path, capsys, model_file):
    tifffile.imwrite(tmp_path / "ok.tif", np.stack([PLANE] * 4))
    (tmp_path / "bad.tif").write_bytes((tmp_path / "ok.tif").read_bytes()[:5000])
    code, err = _cli(["predict", tmp_path / "bad.tif", "--model", model_file, "--out", tmp_path / "o"], capsys)
    assert code == 1 and "Cannot read the image" in err and "damaged or truncated" in err
    assert "dimensions" not in err


@pytest.mark.skipif(not NO_GPU, reason="a CUDA GPU is present")
def test_cli_cuda_without_gpu_reports_the_device_alone(tmp_path, capsys, model_file):
    _files(tmp_path, a=PLANE)
    code, err = _cli(["predict", tmp_path / "a.npy", "--model", model_file, "--out", tmp_path, "--device", "cuda"],
                     capsys)
    assert code == 2 and "CUDA" in err and err.count("Fix:") == 1 and "does not fit" not in err
    assert "--device cpu" in err


def test_cli_same_stem_twice_is_refused(tmp_path, capsys, model_file):
    _files(tmp_path, a=PLANE, a_tif=PLANE)
    code, err = _cli(["predict", tmp_path, "--model", model_file, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "would both be written to a.csv" in err
    assert not (tmp_path / "o").exists()


def test_cli_model_file_holding_code_is_refused_everywhere(tmp_path, capsys):
    class Code:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"x": Code()}, tmp_path / "evil.pt")
    _files(tmp_path, a=PLANE)
    for argv in (["predict", tmp_path / "a.npy", "--out", tmp_path / "o", "--model", tmp_path / "evil.pt"],
                 ["demo", "--out", tmp_path / "d", "--model", tmp_path / "evil.pt"],
                 ["finetune", "--images", tmp_path, "--out", tmp_path / "f.pt", "--model", tmp_path / "evil.pt"]):
        code, err = _cli(argv, capsys)
        assert code == 2 and "holds Python code" in err and "weights_only" not in err, (argv, err)


def _tables(d, pred: dict, truth: dict):
    for sub, tables in (("pred", pred), ("truth", truth)):
        (d / sub).mkdir(exist_ok=True)
        for name, text in tables.items():
            (d / sub / name).write_text(text)
    return ["evaluate", "--pred", d / "pred", "--truth", d / "truth"]


EVAL_CASES = [
    ("no name matches", {"a.csv": "y,x\n1,2\n"}, {"b.csv": "y,x\n1,2\n"}, [], "No prediction"),
    ("z,y,x truth vs y,x prediction", {"a.csv": "y,x\n1,2\n"}, {"a.csv": "z,y,x\n0,1,2\n"}, [], "dropping an axis"),
    ("negative radius", {"a.csv": "y,x\n1,2\n"}, {"a.csv": "y,x\n1,2\n"}, ["--radius", "-1"], "not a distance"),
    ("NaN radius", {"a.csv": "y,x\n1,2\n"}, {"a.csv": "y,x\n1,2\n"}, ["--radius", "nan"], "not a distance"),
    ("NaN coordinate", {"a.csv": "y,x\nnan,2\n"}, {"a.csv": "y,x\n1,2\n"}, [], "NaN or infinite"),
    ("empty truth folder", {"a.csv": "y,x\n1,2\n"}, {}, [], "No CSV files"),
]


@pytest.mark.parametrize("case, pred, truth, extra, words", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_cli_evaluate_bad_inputs(tmp_path, capsys, case, pred, truth, extra, words):
    code, err = _cli(_tables(tmp_path, pred, truth) + extra, capsys)
    assert code == 2 and words in err and "Fix:" in err, err


def test_cli_missing_inputs(tmp_path, capsys, model_file):
    code, err = _cli(["predict", tmp_path / "nope.tif", "--model", model_file, "--out", tmp_path], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, err = _cli(["predict", tmp_path / "empty", "--model", model_file, "--out", tmp_path], capsys)
    assert code == 2 and "No images found" in err
    code, err = _cli(["train", "--synthetic", "2", "--out", tmp_path], capsys)
    assert code == 2 and "is a folder" in err
