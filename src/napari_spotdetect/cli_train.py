"""``spotdetect train`` and ``spotdetect finetune``: thin command-line wrappers around the Trainer.

``add_train_parsers(subparsers)`` is called by the main CLI (``cli.py``). Checkpoints go to a work folder
next to the output (``<out stem>_checkpoints``) so that an interrupted run can ``--resume``; the final
model is written atomically to ``--out`` and loads with ``--model <out>`` everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .core.errors import SpotDetectError
from .core.training.examples import VAL_SHARE
from .core.training.finetune_defaults import DEFAULTS as FT


def _common(p, epochs: int, steps: int | None, lr: float, lr_help: str):
    p.add_argument("--images", help="folder of training images")
    p.add_argument("--spots", default=None, help="folder of <image stem>.csv spot tables (default: --images)")
    p.add_argument("--val-images", default=None,
                   help=f"folder of validation images (default: hold out {round(100 * VAL_SHARE)}%%)")
    p.add_argument("--val-spots", default=None, help="folder of validation CSVs (default: --val-images)")
    p.add_argument("--out", required=True, help="model file to write (.pt)")
    p.add_argument("--epochs", type=int, default=epochs, help="passes over the data (default: %(default)s)")
    p.add_argument("--steps-per-epoch", type=int, default=steps, help="batches per epoch (default: one pass over "
                   "the images)" if steps is None else "batches per epoch (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=FT.batch_size,
                   help="training crops per step (default: %(default)s)")
    p.add_argument("--crop", type=int, default=FT.crop, help="training crop size, multiple of 8 (default: %(default)s)")
    p.add_argument("--loss", default=FT.loss, choices=["smoothf1", "dice", "ce", "focal"],
                   help="training loss (default: %(default)s, piscis's)")
    p.add_argument("--l2-weight", type=float, default=FT.l2_weight,
                   help="weight of the masked L2 term (default: %(default)s)")
    p.add_argument("--lr", type=float, default=lr, help=lr_help)
    p.add_argument("--seed", type=int, default=FT.seed, help="random seed: the same seed gives the same run")
    p.add_argument("--ema", type=float, default=None,
                   help="validate and keep a moving average of the weights with this decay (e.g. 0.998)")
    p.add_argument("--select", default="f1", choices=["f1", "f1_integral"],
                   help="validation metric that picks the best epoch (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="where the model is loaded and trained: cpu, cuda or mps "
                   "(default: %(default)s)")
    from .cli import THREADS_HELP

    p.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints of an earlier run")
    p.add_argument("--half", action="store_true", help="store weights in half precision (smaller file)")


def add_train_parsers(subparsers) -> None:
    t = subparsers.add_parser("train", help="train a new Piscis-architecture model (from folders or synthetic data)")
    _common(t, epochs=40, steps=None, lr=0.1,
            lr_help="peak learning rate (default: %(default)s, for the default SGD optimizer; use about 1e-3 "
                    "with --optimizer adam)")
    t.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="train on N synthetic images instead of (or in addition to) --images")
    t.add_argument("--kind", default="train", help="synthetic preset (default: %(default)s)")
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                   help="optimizer (default: %(default)s, with momentum, as piscis trains)")
    t.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 128],
                   help="channels of the four encoder stages (default: %(default)s)")
    t.add_argument("--depths", type=int, nargs=4, default=[1, 2, 2, 2],
                   help="blocks in the four encoder stages (default: %(default)s)")
    t.set_defaults(func=cmd_train)
    f = subparsers.add_parser("finetune", help="adapt a model to your images from a few annotated examples")
    _common(f, epochs=FT.epochs, steps=FT.steps_per_epoch, lr=FT.lr,
            lr_help="learning rate of the Adam optimizer used for fine-tuning (default: %(default)s; DeepSpot "
                    "models: 1e-4 or less)")
    f.add_argument("--model", default="default", help="model to start from (default: %(default)s)")
    f.add_argument("--val-share", type=float, default=FT.val_share,
                   help="share of the examples held out to choose the threshold and the best epoch; a single "
                        "image or region is split in space; 0 validates on the training examples "
                        "(default: %(default)s)")
    f.add_argument("--fast", action="store_true",
                   help="train only the decoder and heads, 5 epochs x 8 steps on 96 px crops (about a minute of "
                        "CPU for one region); flags given explicitly still win")
    _regions_arg(f)
    f.set_defaults(func=cmd_finetune)
    c = subparsers.add_parser("calibrate", help="choose a model's threshold from a few annotated regions "
                              "(no training; well under a second once detected)")
    c.add_argument("--images", required=True, help="folder of images")
    c.add_argument("--spots", default=None, help="folder of <image stem>.csv spot tables (default: --images)")
    c.add_argument("--model", default="default", help="model to calibrate (default: %(default)s)")
    c.add_argument("--out", required=True, help="model file to write, the model with the chosen threshold (.pt)")
    c.add_argument("--radius", type=float, default=None,
                   help="match radius in pixels between your spots and detections (default: 3)")
    c.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    _regions_arg(c)
    c.set_defaults(func=cmd_calibrate)


def _regions_arg(p) -> None:
    p.add_argument("--regions", default=None, metavar="CSV",
                   help="rectangles in which every spot is annotated (outside them is unknown): a CSV with "
                        "columns y0,x0,y1,x1 (and image, a file name, or none for every image), or a napari "
                        "Shapes layer saved as CSV; images without a region are left out")


def _data(args, synthetic: int = 0, kind: str = "train"):
    from .core.training.synthetic import synthetic_dataset
    from .core.training.train import pairs_from_folder

    regions = None
    if getattr(args, "regions", None):
        from .core.groundtruth.regions import read_regions_csv

        regions = read_regions_csv(args.regions)
    train = pairs_from_folder(args.images, args.spots, regions=regions) if args.images else []
    if synthetic:
        train += synthetic_dataset(synthetic, kind, seed=args.seed + 1)
    if not train:
        raise SpotDetectError("No training data.", "pass --images FOLDER (with CSVs) or --synthetic N.")
    val = pairs_from_folder(args.val_images, args.val_spots) if getattr(args, "val_images", None) else None
    if val is None and synthetic and not args.images:
        val = synthetic_dataset(max(2, synthetic // 10), kind, seed=args.seed + 2, shape=(256, 256))
    info = {"images": str(Path(args.images).resolve()) if args.images else None,
            "regions": str(Path(args.regions).resolve()) if getattr(args, "regions", None) else None,
            "synthetic": {"n_images": synthetic, "kind": kind} if synthetic else None,
            "validation": str(Path(args.val_images).resolve()) if getattr(args, "val_images", None) else None}
    return train, val, info


def _show(ev):
    """One progress line on stderr (Trainer and fine-tuning events alike)."""
    if ev.kind == "step":
        loss = ev.losses.get("loss", float("nan")) if hasattr(ev, "losses") else ev.loss
        eta = getattr(ev, "eta_s", None)
        print(f"\repoch {ev.epoch}/{ev.epochs} step {ev.step}/{ev.steps} loss {loss:.4f}"
              + (f", about {eta:.0f} s left" if eta is not None else ""), end="", file=sys.stderr, flush=True)
    elif ev.message:
        print(f"\r{ev.message}", file=sys.stderr, flush=True)


def _run(arch, train, val, cfg, args, info) -> int:
    import torch

    from .core.training.train import Trainer
    from .core.weights.native import save_model

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.is_dir():
        raise SpotDetectError(f"--out {out} is a folder.", "give the model file to write, e.g. --out my_model.pt.")
    work = out.parent / f"{out.stem}_checkpoints"
    tr = Trainer(arch, train, val, cfg, out_dir=work, name=out.stem, resume=args.resume, data_info=info)

    res = tr.fit(_show)
    path = save_model(res.model, out, half=args.half)
    val_f1 = res.model.info.card.get("validation", {}).get("f1")
    print(f"wrote {path} (threshold {res.model.default_threshold:.2f}"
          + (f", validation F1 {val_f1:.3f}" if val_f1 is not None else "") + f"); checkpoints in {work}",
          file=sys.stderr)
    return 0


def _check_early(args) -> None:
    """Settings that need no data, checked before the data is read or made (that takes seconds to minutes)."""
    from .core.training.config import TrainConfig, check_run_settings

    check_run_settings(TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                                   batch_size=args.batch_size, device=args.device))


def cmd_train(args) -> int:
    from .core.models.piscis_net import PiscisConfig
    from .core.training.train import TrainConfig

    _check_early(args)
    train, val, info = _data(args, args.synthetic, args.kind)
    cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                      crop=args.crop, loss=args.loss, l2_weight=args.l2_weight, optimizer=args.optimizer, lr=args.lr,
                      seed=args.seed, device=args.device, ema=args.ema, select=args.select)
    arch = PiscisConfig(widths=tuple(args.widths), depths=tuple(args.depths))
    if val is None:  # the trainer never splits: hold images out here, as fine-tuning does
        from .core.training.examples import split_examples

        train, val = split_examples(train, VAL_SHARE, args.seed) if len(train) > 1 else (train, None)
    return _run(arch, train, val, cfg, args, info)


def cmd_finetune(args) -> int:
    """The same call as the API and the napari panel: :func:`core.training.finetuning.finetune`."""
    import torch

    from .core.models.zoo import load_model
    from .core.training import finetuning

    if not args.images:
        raise SpotDetectError("Fine-tuning needs annotated images.", "pass --images FOLDER with one CSV per image.")
    _check_early(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")  # a bad model file is reported before the data is read
    train, val, info = _data(args)
    sizes = {k: getattr(args, k) for k in ("epochs", "steps_per_epoch", "crop")}
    if args.fast:  # the preset's sizes, except those the user set to something else than the defaults
        sizes = {k: getattr(finetuning.FAST, k) if v == getattr(FT, k) else v for k, v in sizes.items()}
    cfg = finetuning.finetune_config(fast=args.fast, **sizes, batch_size=args.batch_size, loss=args.loss,
                                     l2_weight=args.l2_weight, lr=args.lr, seed=args.seed, device=args.device,
                                     ema=args.ema, select=args.select)
    res = finetuning.finetune(model, train, val, cfg, out=args.out, progress=_show, data_info=info,
                              resume=args.resume, half=args.half, val_share=args.val_share)
    if res.model is None:
        print("stopped before the first epoch ended: nothing was written", file=sys.stderr)
        return 1
    print(f"{res.verdict()}\nwrote {res.path}", file=sys.stderr)
    return 0


def cmd_calibrate(args) -> int:
    """The same call as the API and the napari panel: :func:`core.groundtruth.calibration.calibrate`."""
    import torch

    from .core.groundtruth.calibration import CLICK_RADIUS, calibrate, calibrated_model
    from .core.models.zoo import load_model
    from .core.weights.native import save_model

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.is_dir():
        raise SpotDetectError(f"--out {out} is a folder.", "give the model file to write, e.g. --out calibrated.pt.")
    model = load_model(args.model, device="cpu")
    train, _, _ = _data(args)
    cal = calibrate(model, train, radius=CLICK_RADIUS if args.radius is None else args.radius)
    path = save_model(calibrated_model(model, cal), out)
    print(f"calibrated {model.info.name}: {cal.summary()}\nwrote {path} (use it with --model {path})",
          file=sys.stderr)
    return 0
