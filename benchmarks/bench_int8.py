"""Static int8 quantisation of a Piscis-architecture network on this CPU: its speed beside float32 and bfloat16,
and whether its spots stay those of the float32 network.

PyTorch's dynamic quantisation covers only Linear and recurrent layers, so int8 here is static: FX graph mode
(``prepare_fx`` / ``convert_fx``) with the ``x86`` backend's default mapping (per-channel int8 weights, uint8
activations), calibrated on ``--calibration`` realistic synthetic images normalised as the model normalises
them. Each network (the bundled FPN model and, with ``--model``, any other, e.g. a folded-body file) is timed
on one tile of ``--tile``^2 on one thread, fp32 / bf16 / int8 in turns for ``--repeats`` rounds (median).
For a folded body, ``detect()`` is also run with its network swapped for the int8 one (exact tiles, the
model's own second stage), on ``--images`` images (realistic and synthetic in turn), and the spots are matched
to the float32 network's within 1 px: fast mode's rule is F1 >= 0.99. Variant ``int8, float ends``: the first
level's block and the heads (the input's full range, the logits' and displacements' fine steps) stay float32.

    python benchmarks/bench_int8.py [--model runs/fold5/r_stage5_rs.pt] [--repeats 3] [--images 6]

Prints a table and writes benchmarks/results/int8.json.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def plain_body(net):
    """The network's body as a module FX can trace: no autocast block, no padding branch (tiles are multiples
    of the body's size), logits out."""
    import torch

    body = net.fpn

    class Folded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = body

        def forward(self, x):
            b = self.b
            y = b.trunk(x)
            out = b.unfold_out(b.output(y))
            if hasattr(b, "refine"):
                out = out + b.refine(torch.cat([x, b.unfold_out(b.to_full(y))], 1))
            return out

    class Pyramid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = body

        def forward(self, x):
            feats = self.b.encoder(x)
            style = feats[3].mean(dim=(2, 3))
            style = style / torch.linalg.vector_norm(style, dim=1, keepdim=True)
            return self.b.output(self.b.decoder(feats, style))

    return (Folded() if net.cfg.body == "folded" else Pyramid()).eval()


def quantised(body, calibration, float_ends: bool):
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    qmap = get_default_qconfig_mapping("x86")
    if float_ends:
        for name in ("b.down.0", "b.output", "b.to_full", "b.refine"):
            qmap = qmap.set_module_name(name, None)
    with torch.no_grad():
        prep = prepare_fx(copy.deepcopy(body), qmap, example_inputs=(calibration[0],))
        for c in calibration:
            prep(c)
        return convert_fx(prep)


def as_piscis_net(q, net):
    """A copy of ``net`` whose body is the int8 one (float32 in and out): PiscisNet's own heads and pooling."""
    import torch
    import torch.nn.functional as F

    mult = net.fpn.multiple

    class Padded(torch.nn.Module):  # the folded body's padding to its multiple, which the traced body lacks
        def __init__(self):
            super().__init__()
            self.q = q

        def forward(self, x):
            h, w = x.shape[-2:]
            x = F.pad(x.float().contiguous(), (0, -w % mult, 0, -h % mult), mode="reflect")
            return self.q(x)[..., :h, :w]

    out = copy.deepcopy(net)  # (a shallow copy would share, and so replace, net's own body)
    out.fpn = Padded()
    return out.eval()


def spots_f1(model, int8_net, n_images: int) -> list:
    """F1 within 1 px of detect()'s spots with the int8 network against the float32 network's, per image."""
    import napari_spotdetect as sd
    from napari_spotdetect.core.groundtruth.metrics import evaluate
    from napari_spotdetect.core.training.synthetic import realistic_image, synthetic_image

    out = []
    own = model._net_for
    for i in range(n_images):
        img = (realistic_image((512, 512), seed=2000 + i)[0] if i % 2 else
               synthetic_image((512, 512), n_spots=200, seed=i)[0])
        ref = sd.detect(img, model, speed="exact").spots[["y", "x"]].to_numpy()
        model._net_for = lambda x: int8_net
        try:
            got = sd.detect(img, model, speed="exact").spots[["y", "x"]].to_numpy()
        finally:
            model._net_for = own
        out.append(round(float(evaluate(got, ref, 1.0)["f1"]), 4))
    return out


def measure(path: str, a) -> dict:
    import torch

    import napari_spotdetect as sd
    from napari_spotdetect.core.models.piscis import percentile_normalize
    from napari_spotdetect.core.models.piscis_net import fold_batchnorm
    from napari_spotdetect.core.training.synthetic import realistic_image

    model = sd.load_model(path)
    net = fold_batchnorm(model.net) if model.cfg.body == "folded" else copy.deepcopy(model.net)
    body = plain_body(net)
    norm = percentile_normalize if model.adjustment == "percentile" else (lambda im: (im - im.mean()) / im.std())
    calibration = [torch.from_numpy(np.asarray(norm(realistic_image((384, 384), seed=1000 + i)[0]),
                                               dtype=np.float32)[None, None]) for i in range(a.calibration)]
    variants = {"float32": body, "bfloat16": copy.deepcopy(body).to(torch.bfloat16)}
    for name, float_ends in (("int8", False), ("int8, float ends", True)):
        if float_ends and model.cfg.body != "folded":
            continue
        t0 = time.perf_counter()
        variants[name] = quantised(body, calibration, float_ends)
        print(f"{path}: {name} built in {time.perf_counter() - t0:.1f} s", flush=True)
    x = torch.rand(1, 1, a.tile, a.tile)
    times = {k: [] for k in variants}
    with torch.no_grad():
        for k, v in variants.items():  # warm-up
            v(x.to(torch.bfloat16) if k == "bfloat16" else x)
        for _ in range(a.repeats):
            for k, v in variants.items():
                inp = x.to(torch.bfloat16) if k == "bfloat16" else x
                t0 = time.perf_counter()
                v(inp)
                times[k].append(time.perf_counter() - t0)
    rows = {k: {"s_per_tile": float(np.median(t))} for k, t in times.items()}
    for r in rows.values():
        r["x_bfloat16"] = rows["bfloat16"]["s_per_tile"] / r["s_per_tile"]
    if model.cfg.body == "folded":
        for k in [k for k in rows if k.startswith("int8")]:
            rows[k]["f1_vs_float32"] = spots_f1(model, as_piscis_net(variants[k], net), a.images)
    return {"model": path, "body": model.cfg.body, "rows": rows}


def main(argv=None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="*", default=[], help="model files besides the bundled one")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile", type=int, default=352)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--calibration", type=int, default=8)
    ap.add_argument("--out", default=str(HERE / "results" / "int8.json"))
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # FX quantisation's deprecation notices
    torch.set_num_threads(1)
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
           "tile": a.tile, "threads": 1, "repeats": a.repeats, "calibration_images": a.calibration,
           "models": [measure(p, a) for p in ["default", *a.model]]}
    print(f"\n{res['date']}, one {a.tile}^2 tile, 1 thread, median of {a.repeats}\n")
    print("| model | variant | s per tile | x bfloat16 | spots F1 vs float32 (1 px), per image |")
    print("| --- | --- | --- | --- | --- |")
    for m in res["models"]:
        for k, r in m["rows"].items():
            f1 = ", ".join(f"{v:.3f}" for v in r["f1_vs_float32"]) if "f1_vs_float32" in r else "-"
            print(f"| {m['model']} ({m['body']}) | {k} | {r['s_per_tile']:.3f} | {r['x_bfloat16']:.2f} | {f1} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
