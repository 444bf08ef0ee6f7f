"""How fast could a network be on this CPU? Untrained candidate shapes timed beside the bundled one.

The gap to U-FISH (README, *Performance*) is the network's shape, not the engine: this times, on the fast plan's
tiles of a 1024^2 image (9 x 360^2, batches of 2, channels-last, ``inference_mode``), in float32 and bfloat16:

- ``bundled``: the bundled model's network (Piscis shape, 16-128 channels, full-resolution decoder);
- ``half-width``: the same shape at 8-64 channels (the smaller network measured in the README);
- ``s2d2-relu``: the image folded 2 x 2 into 4 channels (``PixelUnshuffle``), a plain U-Net of 3 x 3
  convolutions with ReLU at 1/2, 1/4 and 1/8 resolution (32, 64, 128 channels), the head unfolded back
  (``PixelShuffle``) to the three full-resolution maps: nothing but the fold runs at full resolution;
- ``s2d4-relu``: the same folded 4 x 4 (16 channels), at 1/4 to 1/16 resolution (48, 96, 192 channels).

Only time and FLOPs: the candidates are untrained, so this says which shapes could leave room for the second
stage inside 1.5x U-FISH's speed, not whether they would find the spots.

    python benchmarks/bench_architectures.py [--repeats 3] [--threads 2]

Prints a table and writes ``results/architectures.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def folded_unet(fold: int, widths: tuple[int, ...], out_maps: int = 3):
    """A plain U-Net (two 3 x 3 conv + ReLU per level, max-pool down, nearest up + concat) on the image folded
    ``fold`` x ``fold`` into channels, its output unfolded to ``out_maps`` full-resolution maps."""
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fold, self.unfold = nn.PixelUnshuffle(fold), nn.PixelShuffle(fold)
            chans = [fold * fold, *widths]
            self.down = nn.ModuleList(block(chans[i], chans[i + 1]) for i in range(len(widths)))
            self.up = nn.ModuleList(block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
            self.head = nn.Conv2d(widths[0], out_maps * fold * fold, 1)

        def forward(self, x):
            m = fold * 2 ** (len(widths) - 1)  # padded to a size every level halves evenly
            hh, ww = x.shape[-2:]
            x = nn.functional.pad(x, (0, -ww % m, 0, -hh % m), mode="reflect")
            skips = []
            h = self.fold(x)
            for i, d in enumerate(self.down):
                h = d(h if i == 0 else nn.functional.max_pool2d(h, 2))
                skips.append(h)
            for i in reversed(range(len(self.up))):
                h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
                h = self.up[i](torch.cat([h, skips[i]], 1))
            return self.unfold(self.head(h))[..., :hh, :ww]

    return Net()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "architectures.json"))
    a = ap.parse_args(argv)
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from turns import take_turns

    torch.set_num_threads(a.threads)
    import napari_spotdetect as sd
    from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet

    bundled = sd.load_model("default", device="cpu").net.eval()
    half = PiscisNet(PiscisConfig(**{**bundled.cfg.to_dict(), "widths": (8, 16, 32, 64)})).eval()
    nets = {"bundled": bundled, "half-width": half, "s2d2-relu": folded_unet(2, (32, 64, 128)).eval(),
            "s2d4-relu": folded_unet(4, (48, 96, 192)).eval()}
    x = torch.randn(9, 1, 360, 360).contiguous(memory_format=torch.channels_last)
    rows = []
    with torch.inference_mode():
        variants = {}
        for name, net in nets.items():
            net = net.to(memory_format=torch.channels_last)
            low = copy.deepcopy(net).to(torch.bfloat16)
            if hasattr(low, "fpn"):
                low.fpn.output.float()  # a Piscis network's 1x1 head stays float32, as fast mode runs it
            with FlopCounterMode(display=False) as fc:
                net(x[:1])
            flops = fc.get_total_flops() * len(x)
            variants[(name, "float32")] = (net, x, flops)
            variants[(name, "bfloat16")] = (low, x.to(torch.bfloat16), flops)

        def run(net, inp):
            for i in range(0, len(inp), 2):
                net(inp[i:i + 2])

        for net, inp, _ in variants.values():
            run(net, inp[:2])  # warm-up
        runs, loads = take_turns({k: (lambda v=v: run(v[0], v[1])) for k, v in variants.items()}, a.repeats)
    for (name, prec), (net, _, flops) in variants.items():
        sec = float(np.median(runs[(name, prec)]))
        rows.append({"network": name, "precision": prec, "seconds_per_1024": sec, "runs": runs[(name, prec)],
                     "gflop_per_1024": flops / 1e9, "gflop_per_s": flops / 1e9 / sec,
                     "parameters": int(sum(p.numel() for p in net.parameters()))})
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "threads": a.threads,
           "torch": torch.__version__, "repeats": a.repeats, "tiles": "9 x 360^2 (a 1024^2 image), batches of 2",
           "load": {"min": min(loads), "median": float(np.median(loads)), "max": max(loads)}, "rows": rows}
    Path(a.out).parent.mkdir(exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"\n{res['date']}, {a.threads} thread(s), median of {a.repeats}; load {res['load']['min']:.1f}-"
          f"{res['load']['max']:.1f}\n")
    print("| network | precision | parameters | GFLOP per 1024^2 | s per 1024^2 | GFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['network']} | {r['precision']} | {r['parameters']:,} | {r['gflop_per_1024']:.0f} | "
              f"{r['seconds_per_1024']:.2f} | {r['gflop_per_s']:.0f} |")


if __name__ == "__main__":
    main()
