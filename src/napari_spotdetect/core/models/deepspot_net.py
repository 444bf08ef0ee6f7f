"""The DeepSpot (MHybrid) network in PyTorch, as the published checkpoint actually stores it.

The stored graph differs from the paper (13 pre-activation residual blocks, not 10; transposed-conv
shortcuts in the up-blocks), so the layer list follows the checkpoint (``shared/specs/deepspot-mhybrid.md``).
TensorFlow's 'same' padding is reproduced exactly: stride-2 convolutions and max-pools pad
``floor(total/2)`` before and the rest after (asymmetric), and stride-2 transposed convolutions drop the
last row and column of the full output. BatchNorm uses eps 1e-3 as Keras does.

Module names mirror the Keras layer names (``up6a.conv2a`` is ``up_res6a_branch2a``), and
:data:`KERAS_LAYERS` lists the Keras layers in checkpoint order, so every stored variable has exactly one
home and a checkpoint that does not fit is refused with the list of what is missing or unexpected.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ops import weights_version

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # Keras momentum 0.99
DROPOUT = 0.2
TRUNK_BLOCKS = "abcdefghijklm"  # 13 blocks: 3a (projection) + 12 identity blocks
UP_BLOCKS = {"a": (128, (256, 128, 128)), "b": (128, (128, 64, 64)), "c": (64, (64, 32, 32))}


def _keras_layers() -> list[str]:
    """Keras names of the 123 layers with weights, in checkpoint order (``layer_with_weights-N``).

    Keras numbers layers in topological order, which interleaves the three CASO paths; from the trunk on
    the order is regular.
    """
    names = ["conv_maxpool1", "conv_atrou1", "bn_maxpool1", "bn_atrou1", "conv1", "bn_conv1",
             "conv_maxpool2", "conv_atrou2", "bn_maxpool2", "bn_atrou2", "conv2", "bn_conv2",
             "conv_maxpool3", "conv_atrou3", "conv3", "bn_maxpool3", "bn_atrou3", "bn_conv3"]
    for b in TRUNK_BLOCKS:
        for part in ("2a", "2b", "2c"):
            names += [f"bn3{b}_branch{part}", f"res3{b}_branch{part}"]
        if b == "a":
            names += ["res3a_branch1", "bn3a_branch1"]
    for b in UP_BLOCKS:
        for part in ("2a", "2b", "2c", "1"):
            names += [f"up_res6{b}_branch{part}", f"up_bn6{b}_branch{part}"]
    return names + ["conv2d"]


KERAS_LAYERS = _keras_layers()


def keras_to_module(name: str) -> str:
    """Keras layer name -> dotted path of the module that holds its weights."""
    if name == "conv2d":
        return "head"
    if name.startswith(("conv", "bn_")):
        return f"caso.{name}"
    if name.startswith("up_"):  # up_res6a_branch2a / up_bn6a_branch1
        kind, rest = name[3:].split("6", 1)
        block, part = rest.split("_branch")
        return f"up6{block}.{'conv' if kind == 'res' else 'bn'}{part}"
    kind, rest = name.split("3", 1)  # bn3b_branch2a / res3a_branch1
    block, part = rest.split("_branch")
    return f"res3{block}.{'conv' if kind == 'res' else 'bn'}{part}"


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def same_pads(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TF 'same' padding (before, after) for length n, kernel k, stride s, dilation d."""
    keff = (k - 1) * d + 1
    out = -(-n // s)
    total = max((out - 1) * s + keff - n, 0)
    return total // 2, total - total // 2


class SameConv(nn.Conv2d):
    """Conv2d with TF 'same' padding; symmetric cases use the built-in padding (faster)."""

    def __init__(self, cin, cout, k=3, stride=1, dilation=1):
        sym = stride == 1
        super().__init__(cin, cout, k, stride=stride, dilation=dilation,
                         padding=((k - 1) * dilation // 2) if sym else 0)
        self._explicit = not sym

    def forward(self, x):
        if self._explicit:
            k, s, d = self.kernel_size[0], self.stride[0], self.dilation[0]
            t, b = same_pads(x.shape[-2], k, s, d)
            left, right = same_pads(x.shape[-1], k, s, d)
            x = F.pad(x, (left, right, t, b))
        return super().forward(x)


def same_maxpool(x: torch.Tensor, k: int = 3, s: int = 2) -> torch.Tensor:
    """TF 'same' max-pool: padded cells never win (pad with -inf).

    The two cases DeepSpot meets use the pool's own implicit -inf padding instead of a padded copy: equal
    padding on both sides, or none before (even sizes), where ``ceil_mode`` keeps the last, partial window.
    """
    t, b = same_pads(x.shape[-2], k, s)
    left, right = same_pads(x.shape[-1], k, s)
    if (t, b) == (left, right) and t == b and t <= k // 2:
        return F.max_pool2d(x, k, s, padding=t)
    if t == left == 0 and all(-(-(n - k) // s) + 1 == -(-n // s) for n in x.shape[-2:]):
        return F.max_pool2d(x, k, s, ceil_mode=True)
    x = F.pad(x, (left, right, t, b), value=float("-inf"))
    return F.max_pool2d(x, k, s)


class SameConvT(nn.ConvTranspose2d):
    """ConvTranspose2d with TF 'same' output size (stride x input): crop the full output at the end."""

    def __init__(self, cin, cout, k=3, stride=1):
        super().__init__(cin, cout, k, stride=stride, padding=(k - 1) // 2 if stride == 1 else 0)

    def forward(self, x):
        y = super().forward(x)
        if self.stride[0] == 1:
            return y
        h, w = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]
        # TF pads the full output floor(excess / 2) at the start: 0 for k=3, s=2
        k, s = self.kernel_size[0], self.stride[0]
        top = max(k - s, 0) // 2
        return y[..., top:top + h, top:top + w]


class Caso(nn.Module):
    """Three 1/8-resolution paths concatenated: strided convs, conv + max-pool, dilated conv + max-pool."""

    def __init__(self, widths=(32, 64, 128)):
        super().__init__()
        cin = 1
        for i, c in enumerate(widths, 1):
            setattr(self, f"conv{i}", SameConv(cin, c, 3, stride=2))
            setattr(self, f"bn_conv{i}", _bn(c))
            setattr(self, f"conv_maxpool{i}", SameConv(cin, c, 3))
            setattr(self, f"bn_maxpool{i}", _bn(c))
            setattr(self, f"conv_atrou{i}", SameConv(cin, c, 3, dilation=2))
            setattr(self, f"bn_atrou{i}", _bn(c))
            cin = c
        self.depth = len(widths)

    def forward(self, x):
        a = b = c = x
        for i in range(1, self.depth + 1):
            # ReLU after the pool: max commutes with it, and the pooled map is 4x smaller
            a = F.relu(getattr(self, f"bn_conv{i}")(getattr(self, f"conv{i}")(a)), inplace=True)
            b = F.relu(same_maxpool(getattr(self, f"bn_maxpool{i}")(getattr(self, f"conv_maxpool{i}")(b))),
                       inplace=True)
            c = F.relu(same_maxpool(getattr(self, f"bn_atrou{i}")(getattr(self, f"conv_atrou{i}")(c))),
                       inplace=True)
        return torch.cat([a, b, c], dim=1)


class PreActBlock(nn.Module):
    """Full pre-activation bottleneck: (BN, ReLU, conv) x 3 (1x1, 3x3, 1x1) plus shortcut, no final ReLU."""

    def __init__(self, cin: int, width: int = 128, projection: bool = False):
        super().__init__()
        self.bn2a, self.conv2a = _bn(cin), nn.Conv2d(cin, width, 1)
        self.bn2b, self.conv2b = _bn(width), nn.Conv2d(width, width, 3, padding=1)
        self.bn2c, self.conv2c = _bn(width), nn.Conv2d(width, width, 1)
        self.drop = nn.Dropout2d(DROPOUT)
        self.projection = projection
        if projection:
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1), _bn(width)

    def forward(self, x):
        y = self.conv2a(F.relu(self.bn2a(x), inplace=True))
        y = self.conv2b(F.relu(self.bn2b(y), inplace=True))
        y = self.drop(self.conv2c(F.relu(self.bn2c(y), inplace=True)))
        return y.add_(self.bn1(self.conv1(x)) if self.projection else x)


#: taps of a 3-tap stride-2 transposed convolution that reach each output phase along one axis, in the
#: order an ordinary convolution over input rows (m - 1, m) uses them: output 2m takes tap 2 from input m - 1
#: and tap 0 from input m; output 2m + 1 takes tap 1 from input m
_PHASE_TAPS = ((2, 0), (1,))


def phase_kernels(convs: tuple[nn.ConvTranspose2d, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The ordinary conv kernels (one per output phase) and the bias of :func:`stride2_as_phases`."""
    weight = torch.cat([c.weight for c in convs], dim=1)  # (in, sum of out, 3, 3)
    kernels = [weight[:, :, list(rows)][:, :, :, list(cols)].transpose(0, 1).contiguous()
               for rows in _PHASE_TAPS for cols in _PHASE_TAPS]
    return kernels, torch.cat([c.bias for c in convs])


def stride2_as_phases(x: torch.Tensor, convs: tuple[nn.ConvTranspose2d, ...], kernels=None,
                      relu_first: bool = False) -> list[torch.Tensor]:
    """The TF-'same' outputs of 3x3 stride-2 transposed convs sharing the input ``x``, by four ordinary convs.

    Each output phase (row even/odd x column even/odd) is an ordinary stride-1 convolution of ``x`` with the
    taps that reach it (2x2, 2x1, 1x2 and 1x1: 9 taps in all, no work on zeros); the four results are written
    interleaved into the outputs. oneDNN runs these 1.2-1.7x faster than its transposed convolution on CPU.
    The convs' outputs are stacked into one ordinary conv per phase; ``kernels`` are
    :func:`phase_kernels` of ``convs`` when the caller keeps them. ``relu_first`` applies a ReLU to the
    first output while it is written (no extra pass). Same values as ``SameConvT`` up to float32 summation
    order.
    """
    n, _, h, w = x.shape
    kernels, bias = kernels or phase_kernels(convs)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    outs = [torch.empty((n, c.out_channels, 2 * h, 2 * w), dtype=x.dtype, device=x.device, memory_format=fmt)
            for c in convs]
    phases = [(py, px, rows, cols) for py, rows in enumerate(_PHASE_TAPS) for px, cols in enumerate(_PHASE_TAPS)]
    for (py, px, rows, cols), kernel in zip(phases, kernels):
        y = F.conv2d(x, kernel, bias, padding=(len(rows) - 1, len(cols) - 1))[..., :h, :w]
        start = 0
        for i, out in enumerate(outs):
            c = out.shape[1]
            if i == 0 and relu_first:
                torch.clamp_min(y[:, start:start + c], 0, out=out[..., py::2, px::2])
            else:
                out[..., py::2, px::2] = y[:, start:start + c]
            start += c
    return outs


class UpBlock(nn.Module):
    """Post-activation up-sampling block of transposed convs; the shortcut is a stride-2 transposed conv."""

    def __init__(self, cin: int, widths: tuple[int, int, int]):
        super().__init__()
        f1, f2, f3 = widths
        self.conv2a, self.bn2a = SameConvT(cin, f1, 3, stride=2), _bn(f1)
        self.conv2b, self.bn2b = SameConvT(f1, f2, 3), _bn(f2)
        self.conv2c, self.bn2c = SameConvT(f2, f3, 3), _bn(f3)
        self.drop = nn.Dropout2d(DROPOUT)
        self.conv1, self.bn1 = SameConvT(cin, f2, 3, stride=2), _bn(f2)

    def forward(self, x):
        if self.training:  # training keeps the transposed convs (and their gradients) as they were
            main, short = self.conv2a(x), self.conv1(x)
            y = F.relu(self.bn2a(main), inplace=True)
        else:
            fused = isinstance(self.bn2a, nn.Identity)
            y, short = stride2_as_phases(x, (self.conv2a, self.conv1), self._phase_kernels(), relu_first=fused)
            if not fused:
                y = F.relu(self.bn2a(y), inplace=True)
        # every in-place op below acts on a fresh output that autograd does not keep
        y = F.relu(self.bn2b(self.conv2b(y)), inplace=True)
        y = self.drop(self.bn2c(self.conv2c(y)))
        return F.relu(y.add_(self.bn1(short)), inplace=True)

    def _phase_kernels(self):
        """:func:`phase_kernels` of the two stride-2 convs, rebuilt only when their weights change."""
        params = (self.conv2a.weight, self.conv2a.bias, self.conv1.weight, self.conv1.bias)
        key = weights_version(params)
        cached = self.__dict__.get("_phase_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, phase_kernels((self.conv2a, self.conv1)))
            self.__dict__["_phase_cache"] = cached
        return cached[1]


class DeepSpotNet(nn.Module):
    """(B, 1, H, W) image divided by its max -> (B, 1, H, W) sigmoid "enhanced" map; H, W multiples of 8."""

    size_multiple = 8

    def __init__(self):
        super().__init__()
        self.caso = Caso()
        for i, b in enumerate(TRUNK_BLOCKS):
            setattr(self, f"res3{b}", PreActBlock(384 if i == 0 else 128, 128, projection=i == 0))
        for b, (cin, widths) in UP_BLOCKS.items():
            setattr(self, f"up6{b}", UpBlock(cin, widths))
        self.head = nn.Conv2d(32, 1, 1)
        self.fused = False

    def trunk(self, x):
        for b in TRUNK_BLOCKS:
            x = getattr(self, f"res3{b}")(x)
        return x

    def forward(self, x):
        x = self.trunk(self.caso(x))
        for b in UP_BLOCKS:
            x = getattr(self, f"up6{b}")(x)
        return torch.sigmoid(self.head(x))

    # -- weights ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def fuse_batchnorm(self) -> DeepSpotNet:
        """Fold every BatchNorm that directly follows a (transposed) conv into it, for faster inference.

        Only the trunk's ``bn2a`` (which acts on the block input) cannot be folded. Irreversible: the
        fused net is for inference only.
        """
        pairs = [(self.caso, f"conv{i}", f"bn_conv{i}") for i in (1, 2, 3)]
        pairs += [(self.caso, f"conv_{p}{i}", f"bn_{p}{i}") for p in ("maxpool", "atrou") for i in (1, 2, 3)]
        for b in TRUNK_BLOCKS:
            blk = getattr(self, f"res3{b}")
            # conv2a -> bn2b and conv2b -> bn2c are consecutive (the ReLU comes after the BN)
            pairs += [(blk, "conv2a", "bn2b"), (blk, "conv2b", "bn2c")]
            if blk.projection:
                pairs.append((blk, "conv1", "bn1"))
        for b in UP_BLOCKS:
            blk = getattr(self, f"up6{b}")
            pairs += [(blk, f"conv{p}", f"bn{p}") for p in ("2a", "2b", "2c", "1")]
        for owner, conv_name, bn_name in pairs:
            conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            if isinstance(conv, nn.ConvTranspose2d):  # weight (in, out, kh, kw)
                conv.weight.mul_(scale.view(1, -1, 1, 1))
            else:
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias.copy_(conv.bias * scale + shift)
            setattr(owner, bn_name, nn.Identity())
        self.fused = True
        return self


_ATTR_TO_PARAM = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                  "moving_mean": "running_mean", "moving_variance": "running_var"}
_SKIP_PREFIXES = ("optimizer/", "keras_api/", "_CHECKPOINTABLE", "save_counter")


def keras_state_dict(tensors: dict, net: nn.Module) -> tuple[dict, list[str]]:
    """Checkpoint tensors -> a torch state dict for ``net``, and a list of problems (empty if it fits)."""
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state, problems, unexpected = {}, [], []
    for key, value in tensors.items():
        if ".OPTIMIZER_SLOT" in key or key.startswith(_SKIP_PREFIXES):
            continue
        param, layer, why = _keras_param(key, expected)
        if param is None:
            unexpected.append(why)
            continue
        arr = np.asarray(value, dtype=np.float32)
        if arr.ndim == 4:  # Conv2D (kh, kw, in, out) and Conv2DTranspose (kh, kw, out, in): same permute
            arr = arr.transpose(3, 2, 0, 1)
        want = tuple(expected[param].shape)
        if arr.shape != want:
            problems.append(f"{key} ({layer}) has shape {tuple(np.asarray(value).shape)}, "
                            f"expected the TF layout of {want}")
            continue
        state[param] = torch.from_numpy(np.ascontiguousarray(arr))
    missing = [p for p in expected if p not in state]
    if missing:
        problems.append(f"{len(missing)} variable(s) missing: " + ", ".join(missing[:8])
                        + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected variable(s): " + ", ".join(unexpected[:8])
                        + (" ..." if len(unexpected) > 8 else ""))
    if not problems:
        for k, v in net.state_dict().items():
            if k.endswith("num_batches_tracked"):
                state[k] = v.clone()
    return state, problems


def _keras_param(key: str, expected: dict) -> tuple:
    """(torch parameter name, Keras layer, None) for a checkpoint key ``layer_with_weights-N/attr/...``, or
    (None, None, how to report the key) for one this network has no place for."""
    parts = key.split("/")
    if (len(parts) != 4 or not parts[0].startswith("layer_with_weights-")
            or parts[2:] != [".ATTRIBUTES", "VARIABLE_VALUE"]):
        return None, None, key
    n = parts[0].rsplit("-", 1)[1]
    if not n.isdigit() or int(n) >= len(KERAS_LAYERS) or parts[1] not in _ATTR_TO_PARAM:
        return None, None, key
    layer = KERAS_LAYERS[int(n)]
    param = f"{keras_to_module(layer)}.{_ATTR_TO_PARAM[parts[1]]}"
    if param not in expected:
        return None, None, f"{key} ({layer} has no {parts[1]})"
    return param, layer, None


def count_parameters(net: nn.Module) -> int:
    """Weights plus BN moving statistics (Keras ``count_params`` counts both): 4,037,249 for MHybrid."""
    return sum(p.numel() for p in net.parameters()) + sum(
        b.numel() for n, b in net.named_buffers() if not n.endswith("num_batches_tracked"))
