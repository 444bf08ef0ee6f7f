"""Ways to run the bundled model's network faster on this CPU, side by side in one run.

Every variant runs the same batch of the fast plan's tiles (a 1024^2 image is 9 tiles of 360^2, fed in
batches of 2), taking turns for ``--repeats`` rounds; reported are the median seconds per 1024^2 image's worth
of tiles, the speed against the float32 network, and the largest label difference against it:

- ``fp32``: float32, channels-last (exact mode's network);
- ``fp32-nchw``: float32 in PyTorch's default layout (what channels-last saves);
- ``fp32-bnfold``: float32 with every BatchNorm that follows a convolution folded into it;
- ``bf16-autocast``: bfloat16 autocast through oneDNN (fast mode's network; AVX-512 BF16 here);
- ``bf16-weights``: the whole network cast to bfloat16 (no per-op casts), head and pooling in float32;
- ``fp32-whole``: float32 on the whole 1024^2 plane as one tile (no overlap recomputed).

Measured once beside it, outside the rounds: ``torch.jit`` trace + freeze + ``optimize_for_inference``
(``--jit``), ``torch.compile`` (``--compile``; inductor needs a C++ compiler, gcc here) and the float32 network
with its BatchNorms folded, exported to ONNX and run by ONNX Runtime, U-FISH's engine (``--onnx``; needs the
``onnx`` and ``onnxruntime`` packages, which the plugin does not use), each with its build time. int8 dynamic
quantisation is not a variant: PyTorch quantises only Linear and recurrent layers
dynamically, and this network is convolutions; static int8 is ``bench_int8.py``.

    python benchmarks/bench_fast_variants.py [--repeats 3] [--threads 1] [--jit] [--compile] [--onnx] [--model F]

Prints a table and writes benchmarks/results/fast_variants.json.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def fold_batchnorm(net):
    """A copy of a Piscis network with each conv -> BatchNorm pair folded into the conv (encoder blocks)."""
    import torch
    from torch import nn

    net = copy.deepcopy(net)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.Sequential) and len(mod) >= 2 and isinstance(mod[0], nn.Conv2d) \
                    and isinstance(mod[1], nn.BatchNorm2d):
                conv, bn = mod[0], mod[1]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                  conv.dilation, conv.groups, bias=True)
                fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
                mod[0], mod[1] = fused, nn.Identity()
    return net.to(memory_format=torch.channels_last)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jit", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--onnx", action="store_true", help="also ONNX Runtime on the exported float32 network")
    ap.add_argument("--model", default="default", help="the bundled model (default) or a model file")
    ap.add_argument("--out", default=str(HERE / "results" / "fast_variants.json"))
    a = ap.parse_args(argv)
    import torch
    from turns import save_turns, take_turns

    torch.set_num_threads(a.threads)
    import napari_spotdetect as sd
    from napari_spotdetect.core.training.synthetic import synthetic_image

    model = sd.load_model(a.model, device="cpu")
    image, _ = synthetic_image((1024, 1024), n_spots=1024 * 1024 // 1500, seed=0)
    stats = model.plane_statistics(image[None])
    starts = [0, 332, 664]  # the fast plan of 1024^2: 3 x 3 tiles of 360^2 (see core.tiling.plan_tiles_even)
    tiles = np.stack([image[None, r:r + 360, c:c + 360] for r in starts for c in starts])
    x = torch.from_numpy(model.normalize_tiles(tiles, stats))
    whole = torch.from_numpy(model.normalize_tiles(image[None, None], stats))
    net = model.net
    nchw = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    folded = fold_batchnorm(net)
    bf16 = copy.deepcopy(net).to(torch.bfloat16)
    bf16.fpn.output.float()  # the 1x1 head stays float32, as under autocast (it casts its input itself)

    def run_net(n, inp, cl=True, dtype=None, cast=False):
        outs = []
        for i in range(0, len(inp), 2):
            b = inp[i:i + 2]
            b = b.contiguous(memory_format=torch.channels_last) if cl else b.contiguous()
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                if cast:
                    outs.append(n(b.to(torch.bfloat16))[0].float())
                else:
                    outs.append(n(b)[0].float())
        return torch.cat(outs)

    variants = {
        "fp32": lambda: run_net(net, x),
        "fp32-nchw": lambda: run_net(nchw, x, cl=False),
        "fp32-bnfold": lambda: run_net(folded, x),
        "bf16-autocast": lambda: run_net(net, x, dtype=torch.bfloat16),
        "bf16-weights": lambda: run_net(bf16, x, cast=True),
        "fp32-whole": lambda: run_net(net, whole),
    }
    with torch.inference_mode():
        ref = variants["fp32"]()
        outs = {k: f() for k, f in variants.items()}  # warm-up, and the outputs to compare
        times, loads = take_turns(variants, a.repeats, log=True)
        names = list(variants)
        extra = {}
        builders = {"jit-freeze": (a.jit, lambda: torch.jit.optimize_for_inference(
                        torch.jit.freeze(torch.jit.trace(net, x[:2]).eval()))),
                    "compile": (a.compile, lambda: torch.compile(net)),
                    "onnxruntime": (a.onnx, lambda: _onnx_runtime(folded, x[:2], a.threads))}
        for name, (wanted, build) in builders.items():
            if wanted:
                extra[name] = _built_variant(build, run_net, x, variants["fp32"])
    base = float(np.median(times["fp32"]))
    rows = []
    for k in names:
        sec = float(np.median(times[k]))
        o = outs[k]
        diff = float((o - whole_ref_crop(ref, o)).abs().max()) if k != "fp32-whole" else _whole_diff(o, ref, starts)
        rows.append({"variant": k, "seconds": sec, "runs": times[k], "speed_vs_fp32": base / sec,
                     "max_label_diff_vs_fp32": diff})
    save_turns(a.out, a.threads, a.repeats, loads, torch=torch.__version__, model=a.model,
               bf16_native=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), rows=rows, measured_once=extra)
    print("| variant | s per 1024^2 | x fp32 | max label diff vs fp32 |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['seconds']:.2f} | {r['speed_vs_fp32']:.2f} | {r['max_label_diff_vs_fp32']:.1e} |")
    for k, v in extra.items():
        x_fp32 = v["fp32_seconds_same_moment"] / v["seconds"]
        print(f"| {k} (build {v['build_s']:.0f} s) | {v['seconds']:.2f} | {x_fp32:.2f} | - |")


def _built_variant(build, run_net, x, fp32) -> dict:
    """Build time (including the first run, where compilers do their work), then one timed run beside float32's."""
    t0 = time.perf_counter()
    built = build()
    run_net(built, x)
    build_s = time.perf_counter() - t0
    return {"build_s": build_s, "seconds": _once(lambda: run_net(built, x)), "fp32_seconds_same_moment": _once(fp32)}


def _onnx_runtime(net, example, threads: int):
    """``net`` exported to ONNX (opset 17) and loaded in an ONNX Runtime CPU session with ``threads`` threads,
    called like the network (returns its outputs as tensors)."""
    import tempfile

    import onnxruntime
    import torch

    path = Path(tempfile.mkdtemp()) / "net.onnx"
    torch.onnx.export(net, (example,), str(path), input_names=["input"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch", 2: "y", 3: "x"}})
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(b):
        return [torch.from_numpy(o) for o in session.run(None, {"input": b.float().contiguous().numpy()})]

    return run


def _once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def whole_ref_crop(ref, o):
    return ref


def _whole_diff(o, ref, starts) -> float:
    """Labels of the whole-plane pass against the tiles' in their centres (away from tile edges)."""
    out = 0.0
    k = 0
    for r in starts:
        for c in starts:
            a = o[0, r + 40:r + 320, c + 40:c + 320]
            b = ref[k, 40:320, 40:320]
            out = max(out, float((a - b).abs().max()))
            k += 1
    return out


if __name__ == "__main__":
    main()
