"""``spotdetect measure``, ``count`` and ``export``, and the ``predict --fit/--labels/--trackmate`` options.

From a spot table to what a biologist reports: fitted spot properties, molecules, spots per cell, and
files for Fiji's TrackMate or SpatialData/AnnData. ``add_biology_parsers`` is called by ``cli.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .core.errors import SpotDetectError

_PS_HELP = ("pixel size in micrometres: one number, Y X, or Z Y X (z step first); adds *_um columns and "
            "physical units to the exports")


def _pixel_size(values):
    if not values:
        return None
    from .core.io.units import as_pixel_size

    return as_pixel_size(values)


def _labels(path):
    if path is None:
        return None
    from .core.io.spots_io import read_image

    arr = read_image(Path(path))
    if arr.dtype.kind not in "iu":
        raise SpotDetectError(f"{path} holds {arr.dtype} values, not integer labels.",
                              "pass a label image (0 = background, one integer per cell), e.g. from Cellpose.")
    return arr


def _label_file(arg, image_path: Path) -> Path:
    """The label file ``--labels``/``--nuclei`` gives for ``image_path``: the file, or its namesake in a folder."""
    p = Path(arg)
    if p.is_dir():
        hits = sorted(f for f in p.iterdir() if f.stem == image_path.stem)
        if not hits:
            raise SpotDetectError(f"No label image named {image_path.stem}.* in {p}.",
                                  "name each label file after its image, or pass one label file.")
        return hits[0]
    if not p.is_file():
        raise SpotDetectError(f"The label image {p} does not exist.", "pass a label image file or a folder of them.")
    return p


def _check_label_scale(label_path: Path, image_um, image_path: Path) -> None:
    """Labels whose file gives another pixel size than the image's were segmented on another scale."""
    if image_um is None or label_path.suffix.lower() not in (".tif", ".tiff"):
        return
    from .core.io.image_files import tiff_info
    from .core.io.units import pixel_size_um

    lab_um = pixel_size_um(tiff_info(label_path))
    if lab_um is None:
        return
    a, b = np.array(image_um[1:]), np.array(lab_um[1:])
    if np.any(np.abs(a - b) > 0.01 * np.maximum(a, b)):
        raise SpotDetectError(f"The label image {label_path.name} has pixels of {b[0]:g} x {b[1]:g} um (y, x) but "
                              f"{image_path.name} has {a[0]:g} x {a[1]:g} um: the labels are on another scale, and "
                              "spots would be counted in the wrong cells.",
                              "segment the image at its own resolution (or resample the labels to it, nearest "
                              "neighbour), so both files give the same pixel size.")


def _labels_for(arg, image_path: Path):
    """``--labels`` is one label file for every image, or a folder of label files named after the images."""
    if arg is None:
        return None
    return _labels(_label_file(arg, image_path))


def check_predict_inputs(args, files) -> None:
    """What ``predict``'s biology options need, checked for every image before the first one runs the network."""
    _pixel_size(getattr(args, "pixel_size", None))
    for opt in ("labels", "nuclei"):
        arg = getattr(args, opt, None)
        if arg is None:
            continue
        missing = []
        for f in files:
            try:
                _label_file(arg, Path(f))
            except SpotDetectError:
                missing.append(Path(f).stem)
        if missing:
            raise SpotDetectError(f"--{opt} {arg}: no label image for {len(missing)} of {len(files)} image(s) "
                                  f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}).",
                                  f"put a label file named after each image in {arg} (e.g. {missing[0]}.tif), or "
                                  "pass one label file for all images.")


def add_predict_options(p) -> None:
    g = p.add_argument_group("from spots to biology")
    g.add_argument("--fit", action="store_true", help="fit a Gaussian to every spot (sub-pixel centre, "
                   "amplitude, sigma, background, SNR, integrated intensity) and count molecules per spot")
    g.add_argument("--labels", default=None, help="cell label image (or folder of them, named after the "
                   "images): adds cell/compartment per spot and writes <out>/cells/<image>.csv")
    g.add_argument("--nuclei", default=None, help="nucleus label image (or folder), to split nucleus/cytoplasm")
    g.add_argument("--pixel-size", type=float, nargs="+", default=None, metavar="UM", help=_PS_HELP)
    g.add_argument("--trackmate", action="store_true", help="also write <out>/<image>.xml for Fiji's TrackMate")


class _BatchPost:
    """``predict``'s fits, cell counts and exports for one image, as the batch runner calls them (picklable)."""

    def __init__(self, args):
        self.args = args

    @property
    def settings(self) -> dict:
        """What this step adds to each image's spots, recorded in the provenance (a resume compares it)."""
        a = self.args
        return {k: getattr(a, k, None) for k in ("fit", "labels", "nuclei", "pixel_size", "trackmate")}

    def __call__(self, path, image, spots, axes, pixel_size_um):
        from .core.io.image_sources import read

        return after_predict(self.args, read(image), spots, Path(path), Path(self.args.out), axes=axes,
                             file_pixel_size=pixel_size_um)


def biology_post(args):
    """The per-image step after detection that the biology options ask for, or None when none is asked."""
    wanted = any(getattr(args, k, None) for k in ("fit", "labels", "nuclei", "pixel_size", "trackmate"))
    return _BatchPost(args) if wanted else None


def after_predict(args, image, spots, image_path: Path, out: Path, axes=None, file_pixel_size=None):
    """What ``predict`` does beyond detection, per image; returns the table to write and a provenance note.

    ``--pixel-size`` wins over ``file_pixel_size`` (the one the image file's metadata gives, in um).
    """
    from .core.io.units import with_micrometres

    ps = _pixel_size(getattr(args, "pixel_size", None)) or file_pixel_size
    axes = getattr(args, "axes", None) or axes
    note = {}
    if getattr(args, "fit", False):
        from .core.analysis.measure import count_molecules, measure_spots

        spots = measure_spots(image, spots, axes=axes)
        if len(spots) and spots["fit_ok"].any():
            spots, ref = count_molecules(spots, pixel_size=ps)
            note["single_molecule_intensity"] = ref
        note["gaussian_fit"] = {"n_fit_ok": int(spots["fit_ok"].sum()) if len(spots) else 0}
    cells = _labels_for(getattr(args, "labels", None), image_path)
    if cells is not None:
        from .core.analysis.cells import check_labels_match, count_spots_in_cells
        from .core.io.exports import write_cell_table

        nuclei = _labels_for(args.nuclei, image_path)
        for name, lab, opt in (("cells", cells, "labels"), ("nuclei", nuclei, "nuclei")):
            if lab is not None:
                check_labels_match(lab, np.shape(image), axes, name, image=str(image_path))
                _check_label_scale(_label_file(getattr(args, opt), image_path), file_pixel_size, image_path)
        spots, table = count_spots_in_cells(spots, cells, nuclei, pixel_size=ps)
        cell_path = write_cell_table(table, out / "cells" / f"{image_path.stem}.csv")
        note["cell_table"] = str(cell_path)
        print(f"{image_path.name}: {int((spots['cell'] > 0).sum())} spots in {len(table)} cells -> {cell_path}",
              file=sys.stderr)
    if ps is not None:
        spots = with_micrometres(spots, ps)
        note["pixel_size_zyx_um"] = [None if np.isnan(v) else v for v in ps]
    if getattr(args, "trackmate", False):
        from .core.io.exports import write_trackmate_xml

        write_trackmate_xml(spots, out / f"{image_path.stem}.xml", pixel_size=ps,
                            image_shape=np.shape(image), image_name=str(image_path))
    return spots, note


def cmd_measure(args) -> int:
    from .core.analysis.measure import count_molecules, measure_spots
    from .core.io.spots_io import read_image, read_spots_csv, write_spots_csv

    image = read_image(Path(args.image))
    spots = read_spots_csv(Path(args.spots))
    ps = _pixel_size(args.pixel_size)
    out = measure_spots(image, spots, axes=args.axes, channel=args.channel,
                        sigma=args.sigma, window=args.window, pixel_size=ps)
    prov = {"gaussian_fit": {"image": str(Path(args.image).resolve()), "spots": str(Path(args.spots).resolve()),
                             "sigma_start": args.sigma, "window": args.window}}
    if not args.no_molecules and len(out) and out["fit_ok"].any():
        out, ref = count_molecules(out, args.reference, pixel_size=ps)
        prov["single_molecule_intensity"] = ref
    path = write_spots_csv(out, Path(args.out), provenance=prov)
    ok = int(out["fit_ok"].sum()) if len(out) else 0
    msg = f"{len(out)} spots fitted ({ok} good fits)"
    if "molecules" in out.columns:
        msg += f", {int(out['molecules'].sum())} molecules ({int(out['cluster'].sum())} clusters)"
    print(f"{msg} -> {path}", file=sys.stderr)
    return 0


def cmd_count(args) -> int:
    from .core.analysis.cells import count_spots_in_cells
    from .core.io.exports import write_cell_table
    from .core.io.spots_io import read_image, read_spots_csv, write_spots_csv

    spots = read_spots_csv(Path(args.spots))
    cells, nuclei = _labels(args.cells), _labels(args.nuclei)
    image = read_image(Path(args.image)) if args.image else None
    grid, axes, what = _image_grid(Path(args.spots), image, args.image)
    if grid is not None:
        from .core.analysis.cells import check_labels_match

        for name, lab in (("cells", cells), ("nuclei", nuclei)):
            if lab is not None:
                check_labels_match(lab, grid, axes, name, image=what)
    assigned, table = count_spots_in_cells(spots, cells, nuclei, pixel_size=_pixel_size(args.pixel_size),
                                           image=image, by=args.by)
    path = write_cell_table(table, Path(args.out))
    if args.spots_out:
        write_spots_csv(assigned, Path(args.spots_out))
    print(f"{int((assigned['cell'] > 0).sum())} of {len(assigned)} spots in {len(table)} cells "
          f"(median {float(table['n_spots'].median()) if len(table) else 0:g} per cell) -> {path}", file=sys.stderr)
    return 0


def _provenance_of(spots_path: Path) -> dict:
    """The spot table's provenance, or {} when it has none; a damaged one is an error that names the file."""
    from .core.io.spots_io import provenance_path

    prov = provenance_path(spots_path)
    if not prov.is_file():
        return {}
    try:
        doc = json.loads(prov.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise SpotDetectError(f"{prov} is not valid JSON ({err}).",
                              f"restore it, or move it away to use {spots_path.name} without its provenance.") from err
    if not isinstance(doc, dict):
        raise SpotDetectError(f"{prov} holds a JSON {type(doc).__name__}, not a provenance record.",
                              f"restore it, or move it away to use {spots_path.name} without its provenance.")
    return doc


def _image_shape_of(path: Path):
    """The shape of an image file, read from its header (lazily); None when it is not there to read."""
    from .core.io.image_sources import is_image_path, opened_image

    if not is_image_path(path):
        return None
    with opened_image(path) as (arr, _axes):
        return tuple(int(v) for v in arr.shape)


def _image_grid(spots_path: Path, image=None, image_path=None):
    """(shape, axes, name) of the image the spots were found in: from ``image`` or the table's provenance."""
    if image is not None:
        return np.shape(image), None, str(image_path)
    prov = _provenance_of(spots_path)
    shape, axes = prov.get("image_shape"), prov.get("axes")
    if isinstance(shape, list) and all(isinstance(v, int) and v > 0 for v in shape) and shape:
        return tuple(shape), axes if isinstance(axes, str) else None, f"the image of {spots_path.name} (its provenance)"
    return None, None, None


def cmd_export(args) -> int:
    from .core.io.exports import write_points_table, write_trackmate_xml
    from .core.io.spots_io import provenance_path, read_spots_csv

    src = Path(args.spots)
    spots = read_spots_csv(src)
    ps = _pixel_size(args.pixel_size)
    prov = _provenance_of(src)
    if ps is None:  # a table written with a pixel size remembers it in its provenance
        saved = prov.get("pixel_size_zyx_um")
        if saved is not None:
            if not (isinstance(saved, list) and all(v is None or isinstance(v, (int, float)) for v in saved)):
                raise SpotDetectError(f"{provenance_path(src)} has a pixel size that is not a list of numbers: "
                                      f"{str(saved)[:80]}.", "pass --pixel-size, or fix or move away the provenance.")
            ps = _pixel_size([np.nan if v is None else v for v in saved]) if saved else None
    if args.to == "trackmate":
        shape = args.image_shape
        if shape is None and args.image:  # the image's own size, not the extent of its spots
            shape = _image_shape_of(Path(args.image))
        if shape is None:
            shape = _image_grid(src)[0]
        path = write_trackmate_xml(spots, Path(args.out), pixel_size=ps, image_name=args.image or "",
                                   image_shape=shape)
    else:
        path = write_points_table(spots, Path(args.out), pixel_size=ps)
    units = "micrometres" if ps is not None else "pixels (no --pixel-size)"
    print(f"{len(spots)} spots, positions in {units} -> {path}", file=sys.stderr)
    return 0


def add_biology_parsers(sub) -> None:
    m = sub.add_parser("measure", help="fit a Gaussian to every spot of a table (sub-pixel centre, amplitude, "
                       "sigma, background, SNR, integrated intensity) and count molecules in clusters")
    m.add_argument("image", help="the image the spots were found in")
    m.add_argument("spots", help="spot table (CSV)")
    m.add_argument("--out", required=True, help="CSV to write (the table with the measurements added)")
    m.add_argument("--axes", default=None, help="axes of the image, e.g. yx, zyx, tyx (default by rank)")
    m.add_argument("--channel", type=int, default=None, help="channel to fit in, for multi-channel images")
    m.add_argument("--sigma", type=float, nargs="+", default=None, help="starting sigma in pixels (or Z XY)")
    m.add_argument("--window", type=int, nargs="+", default=None, help="half-size of the fitted window (px)")
    m.add_argument("--pixel-size", type=float, nargs="+", default=None, metavar="UM", help=_PS_HELP)
    m.add_argument("--reference", type=float, default=None, help="integrated intensity of one molecule "
                   "(default: the median over isolated spots)")
    m.add_argument("--no-molecules", action="store_true", help="do not count molecules per spot")
    m.set_defaults(func=cmd_measure)

    c = sub.add_parser("count", help="spots per cell from a cell label image (and nuclei): a per-cell table")
    c.add_argument("spots", help="spot table (CSV)")
    c.add_argument("--cells", required=True, help="cell label image (tif, npy, png), 2-D or 3-D")
    c.add_argument("--nuclei", default=None, help="nucleus label image, to split nucleus/cytoplasm")
    c.add_argument("--image", default=None, help="the image, for the mean intensity of each cell")
    c.add_argument("--pixel-size", type=float, nargs="+", default=None, metavar="UM", help=_PS_HELP)
    c.add_argument("--by", default=None, help="also count per value of this column, e.g. c (channel = gene): "
                   "adds n_spots_c0, n_spots_c1, ...")
    c.add_argument("--out", required=True, help="per-cell table to write (CSV)")
    c.add_argument("--spots-out", default=None, help="also write the spots with their cell and compartment")
    c.set_defaults(func=cmd_count)

    e = sub.add_parser("export", help="convert a spot table to TrackMate XML (Fiji) or a points table in um")
    e.add_argument("spots", help="spot table (CSV)")
    e.add_argument("--to", required=True, choices=["trackmate", "points"],
                   help="trackmate: TrackMate XML for Fiji; points: a points table in um and px (SpatialData, AnnData)")
    e.add_argument("--out", required=True, help="file to write (.xml for trackmate; .csv or .parquet for points)")
    e.add_argument("--pixel-size", type=float, nargs="+", default=None, metavar="UM", help=_PS_HELP)
    e.add_argument("--image", default=None, help="image file TrackMate should open with the spots")
    e.add_argument("--image-shape", type=int, nargs="+", default=None, help="image size ([Z] Y X) for TrackMate")
    e.set_defaults(func=cmd_export)
