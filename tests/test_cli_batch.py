"""`spotdetect predict` on folders: lazy formats, resume, failures, summary, and a Dask cluster."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_spotdetect import detect
from napari_spotdetect.cli import main
from napari_spotdetect.core.training.synthetic import synthetic_image

COLS = ["y", "x", "score", "intensity"]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_piscis):
    from napari_spotdetect.core.weights.native import save_model

    return save_model(tiny_piscis, tmp_path_factory.mktemp("model") / "tiny.pt")


def _ome_zarr(path, image):
    """A two-level OME-Zarr (v0.4 layout) of a (y, x) image."""
    import zarr

    g = zarr.open_group(str(path), mode="w")
    g.create_array("0", shape=image.shape, chunks=(40, 40), dtype=image.dtype)[:] = image
    small = image[::2, ::2]
    g.create_array("1", shape=small.shape, chunks=(40, 40), dtype=image.dtype)[:] = small
    yx = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    g.attrs["multiscales"] = [{"version": "0.4", "axes": yx,
                               "datasets": [{"path": "0"}, {"path": "1"}]}]


@pytest.fixture()
def folder(tmp_path):
    """Four images in four formats, one corrupt TIFF, and a sub-folder that is not an image."""
    d = tmp_path / "images"
    d.mkdir()
    imgs = {}
    for i, name in enumerate(["a", "b", "c", "d"]):
        imgs[name] = (synthetic_image((100 + 10 * i, 120), n_spots=20, seed=10 + i)[0] * 10).astype(np.uint16)
    np.save(d / "a.npy", imgs["a"])
    tifffile.imwrite(d / "b.tif", imgs["b"], tile=(32, 32))  # tiled: read through tifffile's zarr store
    tifffile.imwrite(d / "c.ome.tif", imgs["c"], ome=True)
    _ome_zarr(d / "d.ome.zarr", imgs["d"])
    (d / "e.tif").write_bytes(b"II*\x00 this is not a TIFF")
    (d / "notes").mkdir()
    return d, imgs


def test_folder_with_a_corrupt_image(folder, tiny_file, tiny_piscis, tmp_path, capsys):
    d, imgs = folder
    out = tmp_path / "out"
    assert main(["predict", str(d), "--model", str(tiny_file), "--out", str(out), "--threshold", "0.05"]) == 1
    err = capsys.readouterr().err
    assert "failed images:" in err and "e.tif" in err.split("failed images:")[1]
    for name, img in imgs.items():
        got = pd.read_csv(out / f"{name}.csv")
        ref = detect(img, tiny_piscis, threshold=0.05).spots
        assert len(got) == len(ref) > 0, name
        np.testing.assert_allclose(got[COLS].to_numpy(), ref[COLS].to_numpy(), atol=1e-5)
    summary = pd.read_csv(out / "predict_summary.csv")
    assert list(summary.columns[:3]) == ["image", "spots", "seconds"]
    by = {n.split("/")[-1]: r for n, r in zip(summary.image, summary.itertuples())}
    assert by["e.tif"].status == "failed" and "e.tif" in by["e.tif"].error
    assert by["d.ome.zarr"].status == "done" and by["d.ome.zarr"].spots == len(pd.read_csv(out / "d.csv"))
    assert not (out / "e.csv").exists() and not (out / "notes.csv").exists()


def test_resume_skips_finished_images_and_overwrite_redoes_them(folder, tiny_file, tmp_path):
    d, _ = folder
    (d / "e.tif").unlink()
    out = tmp_path / "out"
    args = ["predict", str(d / "*.npy"), str(d / "b.tif"), str(d / "d.ome.zarr"), "--model", str(tiny_file),
            "--out", str(out)]
    assert main(args) == 0
    stamp = {n: (out / f"{n}.csv").stat().st_mtime_ns for n in "abd"}
    (out / "b.csv").unlink()  # as if the run had stopped before b was written
    assert main(args) == 0
    summary = pd.read_csv(out / "predict_summary.csv")
    assert list(summary.status) == ["skipped (finished before)", "done", "skipped (finished before)"]
    assert summary.spots.notna().all()
    assert all((out / f"{n}.csv").stat().st_mtime_ns == stamp[n] for n in "ad")
    assert main(args + ["--overwrite"]) == 0
    assert set(pd.read_csv(out / "predict_summary.csv").status) == {"done"}
    assert (out / "a.csv").stat().st_mtime_ns != stamp["a"]


def test_two_images_with_one_output_name_are_refused(tmp_path, tiny_file, capsys):
    img = synthetic_image((64, 64), n_spots=5, seed=1)[0]
    np.save(tmp_path / "x.npy", img)
    tifffile.imwrite(tmp_path / "x.tif", img)
    assert main(["predict", str(tmp_path), "--model", str(tiny_file), "--out", str(tmp_path / "o")]) == 2
    assert "both be written to x.csv" in capsys.readouterr().err


def test_missing_path_is_named(tmp_path, tiny_file, capsys):
    assert main(["predict", str(tmp_path / "nope*.tif"), "--model", str(tiny_file), "--out", str(tmp_path)]) == 2
    assert "nope*.tif" in capsys.readouterr().err


def test_dask_cluster_gives_the_same_spots_as_one_process(folder, tiny_file, tmp_path):
    from distributed import Client, LocalCluster

    d, imgs = folder
    (d / "e.tif").unlink()
    one, many = tmp_path / "one", tmp_path / "many"
    assert main(["predict", str(d), "--model", str(tiny_file), "--out", str(one), "--threshold", "0.05"]) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert main(["predict", str(d), "--model", str(tiny_file), "--out", str(many), "--threshold", "0.05",
                     "--dask-scheduler", cluster.scheduler_address]) == 0
        # each worker loaded the model at most once, whatever the number of images
        loaded = client.run(lambda dask_worker: len(getattr(dask_worker, "_spotdetect_models", {})))
        assert set(loaded.values()) <= {0, 1} and sum(loaded.values()) >= 1
    for name in imgs:
        a, b = pd.read_csv(one / f"{name}.csv"), pd.read_csv(many / f"{name}.csv")
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a[COLS].to_numpy(), b[COLS].to_numpy(), atol=1e-5)
        prov = json.loads((many / f"{name}.provenance.json").read_text())
        assert prov["n_spots"] == len(b)


@pytest.mark.parametrize("extra,message", [
    (["--workers", "0"], "--workers 0"),
    (["--workers", "2", "--dask-scheduler", "tcp://127.0.0.1:1"], "both given"),
])
def test_bad_dask_options_are_explained(tmp_path, tiny_file, capsys, extra, message):
    np.save(tmp_path / "a.npy", np.zeros((32, 32), np.float32))
    assert main(["predict", str(tmp_path / "a.npy"), "--model", str(tiny_file), "--out", str(tmp_path / "o"),
                 *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Fix:" in err


def test_predict_says_what_the_bundled_model_left_out(tmp_path, capsys, default_model):
    """A camera's hot pixels: the log line and the saved provenance count them; no spot sits on one."""
    from napari_spotdetect.core.io.spots_io import provenance_path
    from tests.conftest import gaussian_spots, separated_points

    rng = np.random.default_rng(0)
    pts = separated_points(10, (128, 128), 8, 14.0, seed=2)
    spots, hot = pts[:6], np.rint(pts[6:]).astype(int)
    img = rng.poisson(gaussian_spots((128, 128), spots, 1200.0, 1.3, 800.0)).astype(np.float64)
    img[hot[:, 0], hot[:, 1]] += 2500
    tifffile.imwrite(tmp_path / "camera.tif", img.astype(np.uint16))
    assert main(["predict", str(tmp_path / "camera.tif"), "--model", "default", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "camera.tif: 6 spots" in err and "left out as no spots: 4 hot pixels." in err, err
    csv = tmp_path / "out" / "camera.csv"
    table = pd.read_csv(csv, comment="#")
    assert not any(np.hypot(table.y - y, table.x - x).min() < 2 for y, x in hot)
    prov = json.loads(provenance_path(csv).read_text())
    assert prov["left_out_as_no_spots"] == {"hot_pixels": 4, "psf_echoes": 0, "plateau_repeats": 0}
