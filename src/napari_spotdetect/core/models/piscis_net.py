"""The Piscis spots network (FPN decoder on an EfficientNetV2-like encoder), written for PyTorch.

Module names are chosen so that ``state_dict()`` keys and shapes are exactly those of the model files that
the ``piscis`` package (1.1.0) saves: a user's ``.pt`` file loads with ``load_state_dict(strict=True)``.
Widths and depths are parameters so that our own, smaller default model is the same architecture scaled
down; the defaults are piscis's (7,436,307 parameters).

Layout facts (see shared/specs/piscis-1.1.md section 2): encoder convs are conv -> BN -> SiLU without bias;
decoder convs are BN -> SiLU -> conv with bias; a style vector (L2-normalised global mean of the deepest
features) is added as a bias inside every decoder block; the four decoder levels are brought to full
resolution and summed; the head gives (label logit, dy, dx).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ops import deformable_pool


@dataclass(frozen=True)
class PiscisConfig:
    """Architecture hyper-parameters; the defaults reproduce piscis's ``SpotsModel``."""

    in_channels: int = 1
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    depths: tuple[int, int, int, int] = (4, 4, 4, 4)
    expand: tuple[int, int, int, int] = (1, 2, 4, 4)
    se_ratio: float = 0.25
    kernel_size: int = 3  # deformable pooling window, 2 * dilation_iterations + 1
    pooling: str = "max"  # "max" (piscis 1.1.0) or "sum" (PiscisLegacy)
    body: str = "fpn"  # "fpn": piscis's; "folded": our faster U-Net on the image folded into channels
    fold: int = 2  # "folded": the image is folded fold x fold into channels (nothing else runs at full size)
    refine: int = 0  # "folded": channels of a full-size refinement that sees the image itself (0: none)
    style: bool = False  # "folded": a style bias per decoder level from the tile's deepest features, as FPN's

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PiscisConfig:
        d = dict(d)
        for k in ("widths", "depths", "expand"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        return cls(**d)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


class ConvBNAct(nn.Module):
    """conv (no bias) -> BN [-> SiLU]; keys ``conv.0`` and ``conv.1``."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1, act: bool = True, relu: bool = False):
        super().__init__()
        layers = [nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, groups=groups, bias=False), _bn(cout)]
        if act:
            layers.append(nn.ReLU(inplace=True) if relu else nn.SiLU(inplace=True))
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return self.conv(x)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Conv2d(c, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class EncoderBlock(nn.Module):
    """FusedMBConv (``fused=True``) or MBConv with squeeze-excite; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int, fused: bool, se_ratio: float):
        super().__init__()
        mid = cin * expand
        if fused:
            if expand == 1:
                layers = [ConvBNAct(cin, cout, 3)]
            else:
                layers = [ConvBNAct(cin, mid, 3), ConvBNAct(mid, cout, 1, act=False)]
        else:
            layers = [
                ConvBNAct(cin, mid, 1),
                ConvBNAct(mid, mid, 3, groups=mid),
                SqueezeExcite(mid, max(1, int(cin * se_ratio))),
                ConvBNAct(mid, cout, 1, act=False),
            ]
        self.block = nn.Sequential(*layers)
        self.residual = cin == cout

    def forward(self, x):
        y = self.block(x)
        if not self.residual:
            return y
        return y.add_(x) if _may_overwrite() else y + x


class Encoder(nn.Module):
    def __init__(self, cfg: PiscisConfig):
        super().__init__()
        w = cfg.widths
        self.stem = ConvBNAct(cfg.in_channels, w[0], 3)
        stages = []
        cin = w[0]
        for s in range(4):
            blocks = [nn.MaxPool2d(2)] if s > 0 else []
            for _j in range(cfg.depths[s]):
                blocks.append(EncoderBlock(cin, w[s], cfg.expand[s], fused=s < 2, se_ratio=cfg.se_ratio))
                cin = w[s]
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(stages)

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for stage in self.blocks:
            x = stage(x)
            feats.append(x)
        return feats


class BNActConv(nn.Module):
    """BN -> SiLU -> conv (with bias); keys ``conv.0`` (BN) and ``conv.2`` (conv)."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        # the SiLU overwrites the BN's output, which nothing else reads (a fresh 32 MB map per call otherwise)
        self.conv = nn.Sequential(_bn(cin), nn.SiLU(inplace=True), nn.Conv2d(cin, cout, k, padding=(k - 1) // 2))

    def forward(self, x, shift=None):
        """``shift`` (B, C): added to ``x`` before the BN (the style bias), fused with a folded BN."""
        norm = self.conv[0]
        if isinstance(norm, ChannelAffine):
            y = norm(x, shift)
        else:
            y = norm(x if shift is None else x + shift[:, :, None, None])
        return self.conv[2](self.conv[1](y))


class BNConv(nn.Module):
    """BN -> conv (with bias), the decoder's projection; keys ``conv.0`` and ``conv.1``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(_bn(cin), nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        return self.conv(x)


class StyleConv(nn.Module):
    """Adds the skip features and the style bias, then BN -> SiLU -> conv 3x3."""

    def __init__(self, c: int, style_dim: int):
        super().__init__()
        self.conv = BNActConv(c, c, 3)
        self.dense = nn.Linear(style_dim, c)

    def forward(self, x, style, skip=None):
        if skip is not None:
            x = x + skip
        return self.conv(x, self.dense(style))


class UpConv(nn.Module):
    def __init__(self, cin: int, cout: int, style_dim: int):
        super().__init__()
        self.proj = BNConv(cin, cout)
        self.conv = BNActConv(cin, cout, 3)
        self.convs_0 = StyleConv(cout, style_dim)
        self.convs_1 = StyleConv(cout, style_dim)
        self.convs_2 = StyleConv(cout, style_dim)

    def forward(self, x, style, skip=None):
        if _may_overwrite():  # the same sums without two fresh full-size maps
            h = self.proj(x).add_(self.convs_0(self.conv(x), style, skip))
            return self.convs_2(self.convs_1(h, style), style).add_(h)
        h = self.proj(x) + self.convs_0(self.conv(x), style, skip)
        return h + self.convs_2(self.convs_1(h, style), style)


class Decoder(nn.Module):
    def __init__(self, cfg: PiscisConfig):
        super().__init__()
        w0, w1, w2, w3 = cfg.widths
        self.up_blocks = nn.ModuleList(
            [UpConv(w3, w3, w3), UpConv(w3, w2, w3), UpConv(w2, w1, w3), UpConv(w1, w0, w3)]
        )
        self.resize_up_blocks = nn.ModuleList(
            [
                nn.ModuleList([UpConv(w3, w0, w3), UpConv(w0, w0, w3), UpConv(w0, w0, w3)]),
                nn.ModuleList([UpConv(w2, w0, w3), UpConv(w0, w0, w3)]),
                nn.ModuleList([UpConv(w1, w0, w3)]),
            ]
        )

    def forward(self, feats, style):
        f = feats[3]
        acc = None
        for i in range(4):
            f = self.up_blocks[i](f, style, skip=feats[3 - i])
            g = f
            if i < 3:
                for blk in self.resize_up_blocks[i]:
                    g = blk(_up2(g), style)
            if acc is None:
                acc = g
            else:
                acc = acc.add_(g) if _may_overwrite() else acc + g
            if i < 3:
                f = _up2(f)
        return acc


def _may_overwrite() -> bool:
    """Sums may overwrite an operand in place: only without autograd, which may need the operands."""
    return not torch.is_grad_enabled()


class ChannelAffine(nn.Module):
    """An eval-mode BatchNorm folded to ``x * scale + shift`` per channel (see :func:`fold_batchnorm`)."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.register_buffer("scale", scale.detach()[None, :, None, None].clone())
        self.register_buffer("shift", (bn.bias - bn.running_mean * scale).detach()[None, :, None, None].clone())

    def forward(self, x, shift=None):
        # BN(x + s) = x * scale + (shift + s * scale): one pass over x instead of an add and a BN
        if x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cpu":
            return self._affine_low(x, shift)
        b = self.shift if shift is None else self.shift + shift[:, :, None, None] * self.scale
        return torch.addcmul(b, x, self.scale)

    def _affine_low(self, x, shift):
        """The same affine through BatchNorm's inference kernel (mean 0, variance 1): on a CPU, addcmul and
        broadcast adds in bfloat16 over channels-last maps of 16 channels take 4-9x its time (an inner loop of
        16 elements), a third of the bundled network's time in fast mode. Per image where the style bias
        differs between the images of a batch."""
        scale = self.scale.reshape(-1).float()
        base = self.shift.reshape(-1).float()
        zeros, ones = torch.zeros_like(scale), torch.ones_like(scale)
        if shift is None:
            return F.batch_norm(x, zeros, ones, scale, base, False, 0.0, 0.0)
        bias = base + shift.float() * scale
        if len(x) == 1:
            return F.batch_norm(x, zeros, ones, scale, bias[0], False, 0.0, 0.0)
        out = torch.empty_like(x)
        for i in range(len(x)):
            out[i:i + 1] = F.batch_norm(x[i:i + 1], zeros, ones, scale, bias[i], False, 0.0, 0.0)
        return out


def with_refinement(net: PiscisNet, channels: int) -> PiscisNet:
    """A copy of a folded-body ``net`` with a full-size refinement of ``channels`` (``PiscisConfig.refine``),
    its other weights ``net``'s and the refinement starting at zero: the same maps until it is trained."""
    return _grown(net, "a full-size refinement", ("fpn.to_full.", "fpn.refine."), refine=int(channels))


def with_style(net: PiscisNet) -> PiscisNet:
    """A copy of a folded-body ``net`` with style biases (``PiscisConfig.style``), starting at zero."""
    return _grown(net, "style biases", ("fpn.style.",), style=True)


def _grown(net: PiscisNet, what: str, new_keys: tuple, **change) -> PiscisNet:
    if net.cfg.body != "folded":
        raise ValueError(f"{what} is for the folded body only (the FPN decoder has its own)")
    out = PiscisNet(PiscisConfig(**{**net.cfg.to_dict(), **change}))
    missing, unexpected = out.load_state_dict(net.state_dict(), strict=False)
    if unexpected or any(not k.startswith(new_keys) for k in missing):
        raise ValueError(f"cannot add {what} to this network (missing {missing}, unexpected {unexpected})")
    return out.to(next(net.parameters()).device)


@torch.no_grad()
def fold_batchnorm(net: PiscisNet) -> PiscisNet:
    """An inference copy of ``net`` with its BatchNorms folded away, outputs equal up to float rounding.

    conv -> BN (encoder) becomes one conv with a bias; BN -> 1x1 conv (decoder projections) too (a 1x1 conv
    pads nothing, so the shift is exact). BN -> SiLU -> conv cannot go into the conv (the SiLU is between):
    that BN becomes a per-channel multiply-add that also takes the style bias. The copy's ``state_dict`` is
    not a model file's: keep ``net`` for saving and training.
    """
    out = copy.deepcopy(net).eval()
    for m in out.modules():
        if isinstance(m, ConvBNAct):
            conv, bn = m.conv[0], m.conv[1]
            aff = ChannelAffine(bn)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                              groups=conv.groups, bias=True).to(conv.weight)
            fused.weight.copy_(conv.weight * aff.scale.view(-1, 1, 1, 1))
            fused.bias.copy_(aff.shift.view(-1))
            m.conv[0], m.conv[1] = fused, nn.Identity()
        elif isinstance(m, BNConv):
            aff, conv = ChannelAffine(m.conv[0]), m.conv[1]
            w = conv.weight.clone()
            conv.weight.copy_(w * aff.scale.view(1, -1, 1, 1))
            conv.bias.add_((w.flatten(1) * aff.shift.view(1, -1)).sum(1))
            m.conv[0] = nn.Identity()
        elif isinstance(m, BNActConv):
            m.conv[0] = ChannelAffine(m.conv[0])
    return out.to(memory_format=torch.channels_last)


def _up2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


class FPN(nn.Module):
    def __init__(self, cfg: PiscisConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.output = BNActConv(cfg.widths[0], 3, 1)

    def forward(self, x):
        feats = self.encoder(x)
        style = feats[3].mean(dim=(2, 3))
        style = style / torch.linalg.vector_norm(style, dim=1, keepdim=True)
        dec = self.decoder(feats, style)
        # the 1x1 head in float32 even under autocast: bfloat16 logits are so coarse that neighbouring pixels
        # tie exactly and one spot becomes two equal local maxima
        with torch.autocast(x.device.type, enabled=False):
            return self.output(dec.float())


class FoldedUNet(nn.Module):
    """The same three maps as :class:`FPN` from a plain U-Net (conv -> BN -> ReLU, two per level, max-pool
    down, nearest up with the skip concatenated) on the image folded ``fold`` x ``fold`` into channels
    (``PixelUnshuffle``), the head's output unfolded back (``PixelShuffle``).

    Why: the FPN decoder spends most of its time on element-wise work over 16-channel maps at full size
    (28 % of this CPU's bfloat16 rate). Folded, nothing but the fold itself runs at full size, and the
    convolutions are wide enough for oneDNN to run near the machine's rate (``benchmarks/bench_architectures.py``:
    at 32-128 channels, with 38 % of the bundled FPN network's FLOPs, it runs 5x faster in bfloat16).
    """

    def __init__(self, cfg: PiscisConfig):
        super().__init__()
        f, w = int(cfg.fold), cfg.widths
        self.multiple = f * 2 ** (len(w) - 1)  # inputs are padded to this (every level halves evenly)
        chans = [cfg.in_channels * f * f, *w]

        def block(cin, cout):
            return nn.Sequential(ConvBNAct(cin, cout, 3, relu=True), ConvBNAct(cout, cout, 3, relu=True))

        self.fold_in, self.unfold_out = nn.PixelUnshuffle(f), nn.PixelShuffle(f)
        self.down = nn.ModuleList(block(chans[i], chans[i + 1]) for i in range(len(w)))
        self.up = nn.ModuleList(block(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1))
        self.output = nn.Conv2d(w[0], 3 * f * f, 1)
        if cfg.style:  # what the whole tile looks like (noise, background, crowding) as a bias per level
            self.style = nn.ModuleList(nn.Linear(w[-1], w[i]) for i in range(len(w) - 1))
        k = int(cfg.refine)
        if k:  # features unfolded to full size, beside the image: a 3x3 conv there corrects the three maps
            self.to_full = nn.Conv2d(w[0], k * f * f, 1)
            self.refine = nn.Sequential(nn.Conv2d(cfg.in_channels + k, k, 3, padding=1), nn.ReLU(inplace=True),
                                        nn.Conv2d(k, 3, 1))

    def zero_refinement(self) -> None:
        """Start the refinement and the style biases at zero, so a network continued from one without them gives
        the same maps."""
        for m in ([self.refine[-1]] if hasattr(self, "refine") else []) + list(getattr(self, "style", [])):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def trunk(self, x):
        """The U-Net on the folded image (H, W multiples of :attr:`multiple`): the first level's features."""
        skips = []
        y = self.fold_in(x)
        for i, down in enumerate(self.down):
            y = down(y if i == 0 else F.max_pool2d(y, 2))
            skips.append(y)
        style = None
        if hasattr(self, "style"):  # FPN's style vector: the deepest features' mean, unit length
            style = y.mean(dim=(2, 3))
            style = style / torch.linalg.vector_norm(style, dim=1, keepdim=True).clamp_min(1e-12)
        for i in reversed(range(len(self.up))):
            y = self.up[i](torch.cat([F.interpolate(y, scale_factor=2, mode="nearest"), skips[i]], 1))
            if style is not None:
                y = y + self.style[i](style)[:, :, None, None]
        return y

    def forward(self, x):
        h, w = x.shape[-2:]
        m = self.multiple
        x = F.pad(x, (0, -w % m, 0, -h % m), mode="reflect") if (h % m or w % m) else x
        y = self.trunk(x)
        # the head in float32 even under autocast, as FPN's (see there)
        with torch.autocast(x.device.type, enabled=False):
            out = self.unfold_out(self.output(y.float()))
        if hasattr(self, "refine"):
            out = out + self.refine(torch.cat([x, self.unfold_out(self.to_full(y))], 1)).float()
        return out[..., :h, :w]


class PiscisNet(nn.Module):
    """Image (B, C, H, W), H and W multiples of 8 -> pooled labels (B, H, W) and deltas (B, 2, H, W)."""

    def __init__(self, cfg: PiscisConfig = PiscisConfig()):
        super().__init__()
        self.cfg = cfg
        if cfg.body not in ("fpn", "folded"):
            raise ValueError(f"unknown network body {cfg.body!r} (this version knows 'fpn' and 'folded')")
        # the body keeps the attribute name "fpn" either way: piscis's files name their keys "fpn.*"
        self.fpn = FPN(cfg) if cfg.body == "fpn" else FoldedUNet(cfg)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if cfg.body == "folded":
            self.fpn.zero_refinement()

    def heads(self, x):
        """Un-pooled label probabilities (B, H, W) and displacements (B, 2, H, W)."""
        # float32 from here even under autocast: in bfloat16, peaks of ~0.99997 round to 1.0 and tie with
        # their neighbours, which would split one spot into several local maxima
        logits = self.fpn(x).float()
        return torch.sigmoid(logits[:, 0]), logits[:, 1:]

    def forward(self, x):
        labels, deltas = self.heads(x)
        return deformable_pool(labels, deltas, self.cfg.kernel_size, self.cfg.pooling), deltas
