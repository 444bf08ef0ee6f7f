"""Issue 23, files and inputs: crafted stores, labels on another grid, batch checks before any image, resume
with other settings, TrackMate sizes, bad provenance; each driven through ``spotdetect`` as a user would."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_spotdetect import detect
from napari_spotdetect.cli import main
from napari_spotdetect.core.io.exports import read_trackmate_xml
from napari_spotdetect.core.training.synthetic import synthetic_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_piscis):
    from napari_spotdetect.core.weights.native import save_model

    return save_model(tiny_piscis, tmp_path_factory.mktemp("model") / "tiny.pt")


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


# -- 12: a zarr store whose codec is pickle never gets to run code --------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _evil_v2(path: Path, marker: Path, dtype: str, compressor, filters):
    path.mkdir(parents=True)
    meta = {"zarr_format": 2, "shape": [64, 64], "chunks": [64, 64], "dtype": dtype, "compressor": compressor,
            "fill_value": None, "order": "C", "filters": filters}
    (path / ".zarray").write_text(json.dumps(meta))
    (path / "0.0").write_bytes(pickle.dumps(_Payload(marker)))


@pytest.mark.parametrize("kind", ["pickle compressor", "object dtype, pickle filter", "OME group, zarr 3 codec"])
def test_zarr_store_with_a_pickle_codec_is_refused_before_opening(tmp_path, tiny_file, capsys, kind):
    marker = tmp_path / "code_ran"
    store = tmp_path / "evil.zarr"
    if kind == "pickle compressor":
        _evil_v2(store, marker, "<f4", {"id": "pickle"}, None)
    elif kind == "object dtype, pickle filter":
        _evil_v2(store, marker, "|O", None, [{"id": "pickle"}])
    else:  # an OME-Zarr group whose full-resolution level (zarr 3 layout) decodes with numcodecs' pickle
        store.mkdir()
        (store / "zarr.json").write_text(json.dumps({
            "zarr_format": 3, "node_type": "group", "attributes": {"ome": {"multiscales": [{
                "name": "cells", "axes": [{"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}]}}}))
        (store / "0").mkdir()
        (store / "0" / "zarr.json").write_text(json.dumps({
            "zarr_format": 3, "node_type": "array", "shape": [64, 64], "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [64, 64]}},
            "chunk_key_encoding": {"name": "default"}, "fill_value": 0,
            "codecs": [{"name": "bytes"}, {"name": "numcodecs.pickle"}]}))
        (store / "0" / "c").mkdir()
        (store / "0" / "c" / "0").mkdir()
        (store / "0" / "c" / "0" / "0").write_bytes(pickle.dumps(_Payload(marker)))
    code, err = _run(["predict", store, "--model", tiny_file, "--out", tmp_path / "o"], capsys)
    assert code == 1 and "not safe to open" in err and "Fix:" in err, err
    assert not marker.exists() and not (tmp_path / "o" / "evil.csv").exists()


def test_an_ome_zarr_named_after_a_codec_is_still_read(tmp_path, tiny_file, capsys):
    import zarr

    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="w")
    g.create_array("0", shape=(64, 64), chunks=(32, 32), dtype="uint16")[:] = 100
    g.attrs["multiscales"] = [{"name": "pickle-lab vlen-utf8 sample", "axes": [{"name": "y"}, {"name": "x"}],
                               "datasets": [{"path": "0"}]}]
    code, err = _run(["predict", tmp_path / "a.zarr", "--model", tiny_file, "--out", tmp_path / "o"], capsys)
    assert code == 0, err


# -- 13: channels and z together -------------------------------------------------------------------------------
def _stack(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 5, (2, 3, 64, 64)).astype(np.float32)
    for c, (y, x) in enumerate([(20, 20), (40, 44)]):
        img[c, 1, y - 1:y + 2, x - 1:x + 2] += 400
    return img


def test_channels_and_z_through_the_api_match_each_channel_alone(tiny_piscis):
    img = _stack()
    both = detect(img, tiny_piscis, 0.05, axes="czyx").spots
    assert {"c", "z", "y", "x"} <= set(both.columns) and set(both["c"]) == {0, 1}
    for c in (0, 1):
        alone = detect(img[c], tiny_piscis, 0.05, axes="zyx").spots
        mine = both[both["c"] == c]
        np.testing.assert_allclose(mine[["z", "y", "x", "score"]].to_numpy(),
                                   alone[["z", "y", "x", "score"]].to_numpy(), atol=1e-6)


def test_five_d_ome_zarr_through_the_cli(tmp_path, tiny_file, capsys):
    import zarr

    g = zarr.open_group(str(tmp_path / "tczyx.ome.zarr"), mode="w")
    g.create_array("0", shape=(1, 2, 3, 64, 64), chunks=(1, 1, 1, 64, 64), dtype="float32")[:] = _stack()[None]
    g.attrs["multiscales"] = [{"axes": [{"name": a} for a in "tczyx"], "datasets": [{"path": "0"}]}]
    code, err = _run(["predict", tmp_path / "tczyx.ome.zarr", "--model", tiny_file, "--out", tmp_path / "o",
                      "--threshold", "0.05"], capsys)
    assert code == 0, err
    spots = pd.read_csv(tmp_path / "o" / "tczyx.csv")
    assert list(spots.columns[:5]) == ["t", "c", "z", "y", "x"] and set(spots["c"]) == {0, 1}


# -- 14: labels on another grid -----------------------------------------------------------------------------------
@pytest.fixture
def image_140x90(tmp_path):
    img, _ = synthetic_image((90, 140), n_spots=12, seed=2)
    np.save(tmp_path / "img.npy", img.astype(np.float32))
    return tmp_path


def test_predict_refuses_transposed_labels_naming_both_shapes(image_140x90, tiny_file, capsys):
    d = image_140x90
    np.save(d / "cells.npy", np.ones((140, 90), np.uint16))
    code, err = _run(["predict", d / "img.npy", "--model", tiny_file, "--out", d / "o", "--labels",
                      d / "cells.npy"], capsys)
    assert code == 1 and "(140, 90)" in err and "(90, 140)" in err and "transposed" in err, err
    assert not (d / "o" / "img.csv").exists() and not (d / "o" / "cells").exists()


def test_count_refuses_labels_of_another_size_from_the_provenance_or_the_image(image_140x90, tiny_file, capsys):
    d = image_140x90
    assert main(["predict", str(d / "img.npy"), "--model", str(tiny_file), "--out", str(d / "o"),
                 "--threshold", "0.05"]) == 0
    np.save(d / "small.npy", np.ones((80, 128), np.uint16))
    np.save(d / "good.npy", np.ones((90, 140), np.uint16))
    capsys.readouterr()
    code, err = _run(["count", d / "o" / "img.csv", "--cells", d / "small.npy", "--out", d / "c.csv"], capsys)
    assert code == 2 and "(80, 128)" in err and "(90, 140)" in err, err
    code, err = _run(["count", d / "o" / "img.csv", "--cells", d / "small.npy", "--image", d / "img.npy",
                      "--out", d / "c.csv"], capsys)
    assert code == 2 and "(80, 128)" in err, err
    assert not (d / "c.csv").exists()
    assert main(["count", str(d / "o" / "img.csv"), "--cells", str(d / "good.npy"), "--out", str(d / "c.csv")]) == 0


# -- 17: batch predict checks before any image ---------------------------------------------------------------------
@pytest.fixture
def two_images(tmp_path):
    for i in range(2):
        np.save(tmp_path / f"im{i}.npy", synthetic_image((64, 64), n_spots=5, seed=i)[0])
    return tmp_path


def _no_image_ran(err, out: Path):
    assert "spots in" not in err and "model:" not in err, err
    assert not list(out.glob("im*.csv")) if out.is_dir() else True


def test_unwritable_out_fails_before_any_image(two_images, tiny_file, capsys):
    d = two_images
    (d / "afile").write_text("not a folder")
    code, err = _run(["predict", d / "im0.npy", d / "im1.npy", "--model", tiny_file, "--out",
                      d / "afile" / "out"], capsys)
    assert code == 2 and "Cannot write results to" in err and "Fix:" in err, err
    _no_image_ran(err, d / "afile")


def test_bad_pixel_size_fails_before_any_image(two_images, tiny_file, capsys):
    d = two_images
    code, err = _run(["predict", d / "im0.npy", d / "im1.npy", "--model", tiny_file, "--out", d / "o",
                      "--pixel-size", "0"], capsys)
    assert code == 2 and "Pixel size" in err, err
    _no_image_ran(err, d / "o")


def test_labels_folder_without_every_image_fails_before_any_image(two_images, tiny_file, capsys):
    d = two_images
    (d / "labels").mkdir()
    np.save(d / "labels" / "im0.npy", np.ones((64, 64), np.uint16))
    code, err = _run(["predict", d / "im0.npy", d / "im1.npy", "--model", tiny_file, "--out", d / "o",
                      "--labels", d / "labels"], capsys)
    assert code == 2 and "1 of 2" in err and "im1" in err, err
    _no_image_ran(err, d / "o")


def test_a_store_in_one_huge_chunk_is_explained(tmp_path, tiny_file, capsys):
    import zarr

    zarr.create_array(str(tmp_path / "huge.zarr"), shape=(40000, 40000), chunks=(40000, 40000), dtype="float32")
    code, err = _run(["predict", tmp_path / "huge.zarr", "--model", tiny_file, "--out", tmp_path / "o"], capsys)
    assert code == 1 and "40000 x 40000" in err and "smaller chunks" in err and "MemoryError" not in err, err


_KILLED_WRITER = """
import sys, time
from napari_spotdetect.core.io.files import atomic_write
atomic_write(sys.argv[1], lambda f: (f.write("y,x\\n1,2\\n"), f.flush(), print("writing", flush=True),
                                     time.sleep(600)))
"""


def test_a_killed_write_leaves_no_temporary_file_after_the_next_run(two_images, tiny_file, capsys):
    d = two_images
    out = d / "o"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out / "im0.csv")], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = list(out.glob(".*.tmp"))
    assert len(left) == 1 and not (out / "im0.csv").exists()  # the kill's left-over, and no half CSV
    code, err = _run(["predict", d / "im0.npy", "--model", tiny_file, "--out", out], capsys)
    assert code == 0, err
    assert not list(out.glob(".*.tmp")) and (out / "im0.csv").is_file()


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    from napari_spotdetect.core.io.files import _WRITER, remove_stale_temp_files

    mine = tmp_path / f".a.csv.{_WRITER}.abc.tmp"
    mine.write_text("being written")
    time.sleep(0.01)
    assert remove_stale_temp_files(tmp_path) == [] and mine.exists()


# -- 21: a rerun with other settings ---------------------------------------------------------------------------
def test_rerun_with_another_threshold_is_refused_and_overwrite_recomputes(two_images, tiny_file, capsys):
    d = two_images
    base = ["predict", d / "im0.npy", d / "im1.npy", "--model", tiny_file, "--out", d / "o"]
    assert _run(base + ["--threshold", "0.05"], capsys)[0] == 0
    first = (d / "o" / "im0.csv").read_bytes()
    code, err = _run(base + ["--threshold", "0.3"], capsys)
    assert code == 2 and "threshold 0.05 then, 0.3 now" in err and "--overwrite" in err, err
    assert (d / "o" / "im0.csv").read_bytes() == first
    code, err = _run(base + ["--threshold", "0.05"], capsys)  # the same settings: resumed, nothing redone
    assert code == 0 and "2 image(s) already done" in err
    code, err = _run(base + ["--contrast-floor", "0.5", "--threshold", "0.05"], capsys)
    assert code == 2 and "contrast_floor" in err
    assert _run(base + ["--threshold", "0.3", "--overwrite"], capsys)[0] == 0
    again = pd.read_csv(d / "o" / "im0.csv")
    assert (again["score"] > 0.3).all()
    assert json.loads((d / "o" / "im0.provenance.json").read_text())["settings"]["threshold"] == 0.3


# -- 22 and 16: export's image size and a bad provenance --------------------------------------------------------
def test_export_trackmate_takes_the_size_of_the_image(image_140x90, tiny_file, capsys):
    d = image_140x90
    assert main(["predict", str(d / "img.npy"), "--model", str(tiny_file), "--out", str(d / "o"),
                 "--threshold", "0.05"]) == 0
    tifffile.imwrite(d / "img.tif", np.load(d / "img.npy"))
    for extra in (["--image", d / "img.tif"], []):  # from the image file, or from the table's provenance
        assert main(["export", str(d / "o" / "img.csv"), "--to", "trackmate", "--out", str(d / "img.xml"),
                     *map(str, extra)]) == 0
        text = (d / "img.xml").read_text()
        assert 'width="140"' in text and 'height="90"' in text, text[-800:]
    assert len(read_trackmate_xml(d / "img.xml")) == len(pd.read_csv(d / "o" / "img.csv"))


@pytest.mark.parametrize("prov", ["{not json", "[1, 2]", '{"pixel_size_zyx_um": "big"}'])
def test_export_with_a_damaged_provenance_is_a_clear_error(tmp_path, capsys, prov):
    pd.DataFrame({"y": [1.0, 2.0], "x": [3.0, 4.0]}).to_csv(tmp_path / "s.csv", index=False)
    (tmp_path / "s.provenance.json").write_text(prov)
    code, err = _run(["export", tmp_path / "s.csv", "--to", "points", "--out", tmp_path / "p.csv"], capsys)
    assert code == 2 and "s.provenance.json" in err and "Fix:" in err and "Traceback" not in err, err


# -- 18: the cases that were still unclear ---------------------------------------------------------------------
@pytest.mark.parametrize("source", [None, 123, ["a.pt"], "x" * 5000 + ".pt", "~no-such-user-here/m.pt"])
def test_model_sources_that_are_not_paths_are_clear_errors(source):
    from napari_spotdetect import load_model
    from napari_spotdetect.core.errors import ModelFileError

    with pytest.raises(ModelFileError, match="Fix:"):
        load_model(source, device="cpu")


def test_a_model_path_too_long_for_the_disk_through_the_cli(two_images, capsys):
    code, err = _run(["predict", two_images / "im0.npy", "--model", "m" * 5000 + ".pt", "--out",
                      two_images / "o"], capsys)
    assert code == 2 and "Cannot read the model" in err and "Traceback" not in err, err


@pytest.mark.parametrize("extra, words", [(["--steps-per-epoch", "-1"], "steps_per_epoch"),
                                          (["--epochs", "0"], "epochs")]
                         + ([(["--device", "cuda"], "no CUDA GPU")] if not __import__("torch").cuda.is_available()
                            else []))
def test_train_settings_are_checked_before_any_data_is_made(tmp_path, capsys, extra, words):
    code, err = _run(["train", "--synthetic", "4", "--out", tmp_path / "m.pt", "--epochs", "1", "--crop", "32",
                      *extra], capsys)
    assert code == 2 and words in err.replace("--steps-per-epoch", "steps_per_epoch") and "Fix:" in err, err
    assert "synthetic" not in err.lower().split("error:")[0]  # nothing was made or trained before the refusal
    assert not (tmp_path / "m_checkpoints").exists() and not (tmp_path / "m.pt").exists()


def test_spot_tables_saved_as_utf16_or_windows_1252_are_read(tmp_path, capsys):
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth" / "a.csv").write_bytes("y,x,note\n10,20,µm\n30,40,é\n".encode("utf-16"))
    (tmp_path / "pred" / "a.csv").write_bytes("y,x,size µm\n10,20,1\n31,40,2\n".encode("cp1252"))
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--radius", "1.5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "1.0000" in out.out.splitlines()[1]  # both spots matched: precision, recall, F1 all 1


def test_labels_whose_file_gives_another_pixel_size_are_refused(tmp_path, tiny_file, capsys):
    img, _ = synthetic_image((64, 64), n_spots=5, seed=3)

    def tif(path, arr, um):
        tifffile.imwrite(path, arr, imagej=True, resolution=(1 / um, 1 / um), metadata={"unit": "um"})

    tif(tmp_path / "img.tif", img.astype(np.float32), 0.1)
    tif(tmp_path / "cells_2x.tif", np.ones((64, 64), np.uint16), 0.2)  # same shape, segmented at half resolution
    tif(tmp_path / "cells.tif", np.ones((64, 64), np.uint16), 0.1)
    code, err = _run(["predict", tmp_path / "img.tif", "--model", tiny_file, "--out", tmp_path / "o", "--labels",
                      tmp_path / "cells_2x.tif"], capsys)
    assert code == 1 and "0.2 x 0.2 um" in err and "0.1 x 0.1 um" in err and "another scale" in err, err
    code, err = _run(["predict", tmp_path / "img.tif", "--model", tiny_file, "--out", tmp_path / "o2", "--labels",
                      tmp_path / "cells.tif"], capsys)
    assert code == 0, err
