"""How fast could a network be on this CPU? Untrained candidate shapes timed beside the bundled one.

The gap to U-FISH (README, *Performance*) is the network's shape, not the engine: this times, on the fast plan's
tiles of a 1024^2 image (9 x 360^2, batches of 2, channels-last, ``inference_mode``), in float32 and bfloat16:

- ``bundled``: the bundled model's network (Piscis shape, 16-128 channels, full-resolution decoder);
- ``half-width``: the same shape at 8-64 channels (the smaller network measured in the README);
- ``folded-2``: the same network with its folded body (``PiscisConfig(body="folded")``, the shape trained in the
  README): the image folded 2 x 2 into 4 channels (``PixelUnshuffle``), a plain U-Net of conv -> BN -> ReLU
  at 1/2 to 1/16 size (32, 64, 128, 128 channels), the head unfolded back (``PixelShuffle``) to the three
  full-size maps: nothing but the fold runs at full size;
- ``folded-4``: folded 4 x 4 (16 channels), at 1/4 to 1/32 size (48, 96, 192, 192 channels).

Each runs as detection runs it: float32 with its BatchNorms folded (exact mode), bfloat16 weights with the
1 x 1 head in float32 (fast mode).

Only time and FLOPs: the candidates are untrained, so this says which shapes could leave room for the second
stage inside 1.5x U-FISH's speed, not whether they would find the spots.

    python benchmarks/bench_architectures.py [--repeats 3] [--threads 2]

Prints a table and writes ``results/architectures.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "architectures.json"))
    a = ap.parse_args(argv)
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from turns import save_turns, take_turns

    torch.set_num_threads(a.threads)
    import napari_spotdetect as sd
    from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet, fold_batchnorm

    bundled = sd.load_model("default", device="cpu").net.eval()

    def shaped(**kw):
        return PiscisNet(PiscisConfig(**{**bundled.cfg.to_dict(), **kw})).eval()

    nets = {"bundled": bundled, "half-width": shaped(widths=(8, 16, 32, 64)),
            "folded-2": shaped(widths=(32, 64, 128, 128), body="folded", fold=2),
            "folded-4": shaped(widths=(48, 96, 192, 192), body="folded", fold=4)}
    x = torch.randn(9, 1, 360, 360).contiguous(memory_format=torch.channels_last)
    rows = []
    with torch.inference_mode():
        variants = {}
        for name, net in nets.items():
            low = copy.deepcopy(net).to(torch.bfloat16).to(memory_format=torch.channels_last)
            low.fpn.output.float()  # the 1x1 head stays float32, as fast mode runs it
            net = fold_batchnorm(net)  # as exact mode runs it
            with FlopCounterMode(display=False) as fc:
                net(x[:1])
            flops = fc.get_total_flops() * len(x)
            params = int(sum(p.numel() for p in low.parameters()))  # the model's own count (BNs not folded)
            variants[(name, "float32")] = (net, x, flops, params)
            variants[(name, "bfloat16")] = (low, x.to(torch.bfloat16), flops, params)

        def run(net, inp):
            for i in range(0, len(inp), 2):
                net(inp[i:i + 2])

        for net, inp, *_ in variants.values():
            run(net, inp[:2])  # warm-up
        runs, loads = take_turns({k: (lambda v=v: run(v[0], v[1])) for k, v in variants.items()}, a.repeats)
    for (name, prec), (_, _, flops, params) in variants.items():
        sec = float(np.median(runs[(name, prec)]))
        rows.append({"network": name, "precision": prec, "seconds_per_1024": sec, "runs": runs[(name, prec)],
                     "gflop_per_1024": flops / 1e9, "gflop_per_s": flops / 1e9 / sec,
                     "parameters": params})
    save_turns(a.out, a.threads, a.repeats, loads, torch=torch.__version__,
               tiles="9 x 360^2 (a 1024^2 image), batches of 2", rows=rows)
    print("| network | precision | parameters | GFLOP per 1024^2 | s per 1024^2 | GFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['network']} | {r['precision']} | {r['parameters']:,} | {r['gflop_per_1024']:.0f} | "
              f"{r['seconds_per_1024']:.2f} | {r['gflop_per_s']:.0f} |")


if __name__ == "__main__":
    main()
