"""DeepSpot as a :class:`SpotModel`: the published MHybrid enhancer plus a fixed spot finder.

DeepSpot does not detect spots: it "enhances" an image (a sigmoid map in (0, 1) where every spot becomes a
saturated 3x3 peak on a dimmed copy of the background). Its promise is that one fixed detector then works
on every image without tuning, so the peak finder below has parameters fixed once for all images: maxima
of 5x5 neighbourhoods above 0.65, refined by a parabola per axis. They were chosen on 45 synthetic
256x256 images of ``core.training.synthetic`` (20-250 spots, peak amplitude 30-3000 over a background of 100):
mean F1 at 1 px 0.997 on the 27 brighter ones and 0.909 on 18 harder ones (0.774 on the dimmest third);
0.5 lets background through on dim images (F1 0.70), 0.8 loses dim spots (0.88).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError
from ..io.files import sha256_of_files
from ..weights.tf_bundle import TensorBundle, proto_fields
from .base import ModelInfo, SpotModel, TileCandidates
from .deepspot_net import DeepSpotNet
from .ops import local_maxima
from .tile_threads import parallel_tiles_possible, run_tiles

#: half-size of the neighbourhood a peak must dominate (5x5): the network draws each spot as a 3x3 plateau
PEAK_RADIUS = 2
#: default score threshold and the lowest one kept (the background of the map sits around 0.05-0.3)
DEFAULT_THRESHOLD = 0.65
THRESHOLD_RANGE = (0.3, 1.0)
#: pixels per forward pass on a CPU: a batch of 8 tiles of 256^2 has activations of up to 134 MB, which the
#: allocator maps fresh from the system at every layer (page faults, zeroing); one 256^2 tile at a time
#: keeps them under 32 MB, reused from the heap, and takes ~15 % less CPU time per tile (same outputs)
CPU_PASS_PIXELS = 256 * 256


def refine_peaks(score: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Sub-pixel (y, x): a parabola through each peak and its two neighbours, along each axis.

    On synthetic images (see the report of issue 3) this beat the plain peak pixel by ~0.04 F1 and a 3x3
    centroid by ~0.005 at low SNR. A non-concave profile keeps the pixel centre on that axis; so does a
    peak on the map's edge (mirror padding: nothing is known beyond it). Offsets stay strictly inside
    +-0.5 px, so a spot never lands exactly on a pixel boundary, where tile ownership borders lie.
    """
    if len(peaks) == 0:
        return np.zeros((0, 2), dtype=np.float64)
    pad = np.pad(score.astype(np.float64), 1, mode="reflect")
    r, c = peaks[:, 0] + 1, peaks[:, 1] + 1

    def offset(before, centre, after):
        curv = before - 2.0 * centre + after
        ok = curv < 0
        return np.clip(np.where(ok, 0.5 * (before - after) / np.where(ok, curv, -1.0), 0.0), -0.49, 0.49)

    dy = offset(pad[r - 1, c], pad[r, c], pad[r + 1, c])
    dx = offset(pad[r, c - 1], pad[r, c], pad[r, c + 1])
    return np.stack([peaks[:, 0] + dy, peaks[:, 1] + dx], axis=1)


class DeepSpotModel(SpotModel):
    """The MHybrid network with the original normalisation and a fixed local-maximum detector.

    Normalisation (as napari-DeepSpot and cbib/DeepSpot do): the **whole plane is divided by its maximum**
    in :meth:`prepare_image`, before tiling, so every tile sees the same scale as the untiled image. Tiles
    are only cast to float32. Planes whose maximum is not positive are fed unscaled.
    """

    map_names = ("enhanced",)
    score_map = "enhanced"
    size_multiple = 8  # three stride-2 stages
    #: 1024-px tiles overlapping by 256 px. The network reaches far: cutting the image changes its output
    #: by ~7e-3 at 64 px from the cut, 2e-5 at 96 px and < 1e-6 from 128 px on. Here every owned pixel is
    #: >= 128 px from a tile edge and tile starts stay on the net's 8-px grid (it is shift-equivariant only
    #: for multiples of 8), so inner seams are invisible (< 1e-6). Images up to 1024 px run in one pass;
    #: a 2048^2 image takes 9 tiles (2.25x the pixels; 512-px tiles with the same margin would take 3x).
    #: ~650 MB of activations per tile on CPU.
    tile_overlap = 0.25
    #: tiles shrink to small images and the last tile ends at the image edge: zeros past the edge of the
    #: image would change the output up to ~0.3 within ~128 px of it
    fit_tiles_to_image = True

    def __init__(self, net: DeepSpotNet, info: ModelInfo, *, tile_size=(1024, 1024), device=None,
                 default_threshold: float = DEFAULT_THRESHOLD, threshold_range=THRESHOLD_RANGE,
                 peak_radius: int = PEAK_RADIUS):
        self.peak_radius = int(peak_radius)
        super().__init__(net, info, tile_size=tile_size, channels=1, default_threshold=default_threshold,
                         threshold_range=threshold_range, device=device)

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """Divide the (C, H, W) plane by its maximum (in float64, cast to float32 like the original)."""
        plane = np.asarray(image, dtype=np.float64)
        top = float(plane.max()) if plane.size else 0.0
        if np.isfinite(top) and top > 0:
            plane = plane / top
        return plane.astype(np.float32)

    def normalize_tiles(self, tiles: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(tiles, dtype=np.float32)

    def tile_pad_mode(self, image_shape) -> str:
        # the network zero-pads its own input at the image border; zeros beyond the edge mimic that best
        return "constant"

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last is ~1.7x faster on CPU (oneDNN); inference does not depend on the batch
        # on a CPU, tiles run side by side on single-threaded workers (tile_threads)
        x = x.contiguous(memory_format=torch.channels_last)
        if parallel_tiles_possible(x):
            step = 1
        elif x.device.type == "cpu":
            step = max(1, CPU_PASS_PIXELS // max(1, x.shape[-2] * x.shape[-1]))
        else:
            step = len(x)
        return run_tiles(lambda t: self.net(t).contiguous(), x, step)

    def tile_candidates(self, maps: np.ndarray, floor: float, min_distance: int = 1) -> TileCandidates:
        score = maps[0]
        peaks = local_maxima(score, floor, max(int(min_distance), self.peak_radius))
        coords = refine_peaks(score, peaks)
        return TileCandidates(coords, score[peaks[:, 0], peaks[:, 1]].astype(np.float64))


# -----------------------------------------------------------------------------------------------------------
# loading the published SavedModel
# -----------------------------------------------------------------------------------------------------------
def savedmodel_layer_names(folder: Path) -> dict[int, str] | None:
    """``{N: Keras layer name}`` of ``layer_with_weights-N``, from ``saved_model.pb``; None if unreadable.

    Why: layers of equal shapes (e.g. ``conv_maxpool1`` and ``conv_atrou1``) could be swapped in another
    export without any shape check noticing; the object graph names them. Field numbers: SavedModel
    .meta_graphs 2, MetaGraphDef.object_graph_def 7, SavedObjectGraph.nodes 1, SavedObject.children 1
    (node_id 1, local_name 2), .user_object 4, SavedUserObject.metadata 3 (JSON with the layer name).
    """
    pb = Path(folder) / "saved_model.pb"
    try:
        meta_graph = next(v for f, _, v in proto_fields(pb.read_bytes()) if f == 2)
        graph = next(v for f, _, v in proto_fields(meta_graph) if f == 7)
        nodes = [v for f, _, v in proto_fields(graph) if f == 1]
        names = {}
        for f, _, ref in proto_fields(nodes[0]):
            if f != 1:
                continue
            d = {ff: vv for ff, _, vv in proto_fields(ref)}
            local = d.get(2, b"").decode()
            if local.startswith("layer_with_weights-"):
                user = next(v for ff, _, v in proto_fields(nodes[d.get(1, 0)]) if ff == 4)
                meta = next(v for ff, _, v in proto_fields(user) if ff == 3)
                names[int(local.rsplit("-", 1)[1])] = json.loads(meta)["name"]
        return names or None
    except (OSError, ValueError, StopIteration, IndexError, KeyError, TypeError, UnicodeDecodeError):
        return None  # the variables alone are enough to load; the names are a cross-check


def _shape_stub(shape) -> np.ndarray:
    """A float32 array of ``shape`` that takes no memory (every element is one shared zero)."""
    try:
        return np.broadcast_to(np.zeros((), np.float32), tuple(int(v) for v in shape))
    except (ValueError, TypeError, OverflowError):  # a shape numpy cannot even describe
        return np.zeros((0,), np.float32)


def load_deepspot_net(path, *, fuse: bool = True, verify: bool = True) -> tuple[DeepSpotNet, object]:
    """(net in eval mode, its TensorBundle) from a SavedModel folder; refuses variables that do not fit."""
    from .deepspot_net import KERAS_LAYERS, keras_state_dict

    bundle = TensorBundle(path)
    folder = bundle.index_path.parent.parent
    stored = savedmodel_layer_names(folder)
    if stored is not None:
        wrong = [f"{n}: {stored.get(n)} (expected {name})" for n, name in enumerate(KERAS_LAYERS)
                 if stored.get(n) != name]
        wrong += [f"{n}: {stored[n]} (unexpected)" for n in sorted(stored) if n >= len(KERAS_LAYERS)]
        if wrong:
            raise ModelFileError(f"{folder}/saved_model.pb stores other layers than DeepSpot (MHybrid): "
                                 + "; ".join(wrong[:6]) + (" ..." if len(wrong) > 6 else "") + ".",
                                 "pass the MHybrid folder of napari-DeepSpot 0.0.7 (cbib/DeepSpot's Mmixed).")
    wanted = [k for k in bundle.keys() if k.startswith("layer_with_weights-") and ".OPTIMIZER_SLOT" not in k]
    others = [k for k in bundle.keys() if not k.startswith("layer_with_weights-")]
    net = DeepSpotNet()
    # names and declared shapes first, against the network, before any tensor is decoded: then only the
    # network's own weights are read, and memory stays at the model's real size whatever the index claims
    with warnings.catch_warnings():  # the stubs are read-only views, and their state is thrown away
        warnings.simplefilter("ignore", UserWarning)
        _, problems = keras_state_dict({**{k: _shape_stub(bundle.entries[k].shape) for k in wanted},
                                        **{k: None for k in others}}, net)
    if problems:
        raise ModelFileError(f"{folder} is not the DeepSpot (MHybrid) network: "
                             + "; ".join(problems) + ".",
                             "pass the MHybrid folder of napari-DeepSpot 0.0.7 (cbib/DeepSpot's Mmixed).")
    tensors = {k: bundle.get(k, verify) for k in wanted}
    tensors.update({k: None for k in others})  # names only: keras_state_dict skips or reports them
    state, problems = keras_state_dict(tensors, net)
    if problems:
        raise ModelFileError(f"{folder} is not the DeepSpot (MHybrid) network: "
                             + "; ".join(problems) + ".",
                             "pass the MHybrid folder of napari-DeepSpot 0.0.7 (cbib/DeepSpot's Mmixed).")
    net.load_state_dict(state, strict=True)
    net.eval()
    if fuse:
        net.fuse_batchnorm()
    return net, bundle


def load_deepspot_savedmodel(path: str | os.PathLike, device=None, *, fuse: bool = True) -> DeepSpotModel:
    """A DeepSpot SavedModel folder (``saved_model.pb`` + ``variables/``) -> :class:`DeepSpotModel`.

    Only ``variables/`` is read (no TensorFlow). BatchNorms are folded into the convolutions unless
    ``fuse=False`` (use that to fine-tune the network).
    """
    folder = Path(path).expanduser()
    if folder.name == "variables":
        folder = folder.parent
    net, bundle = load_deepspot_net(folder, fuse=fuse)
    net = net.to(memory_format=torch.channels_last)
    sha = sha256_of_files(bundle.shard_path(i) for i in range(bundle.num_shards))
    info = ModelInfo(name=folder.name, arch="deepspot", source=str(folder), sha256=sha,
                     card={"enhancer": "napari-DeepSpot 0.0.7 MHybrid",
                           "normalisation": "image / max(image)"})
    return DeepSpotModel(net, info, device=device)
