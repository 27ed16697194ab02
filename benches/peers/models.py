"""PyTorch peers of seglab's three models, layer for layer (same kernels, strides, TensorFlow
'same' padding including its asymmetric cases, keras-contrib instance norm with epsilon on the
standard deviation, Keras batch-norm momentum/epsilon, transposed-convolution cropping), so
that a training step does the same arithmetic as seglab's. Parameter counts are asserted equal
to `seglab models --json` by bench.py.

These networks exist only to time PyTorch on this machine; they are not a second
implementation of the models (no checkpoints, no data handling).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTH_DIVISOR = {"paper": 1, "cpu-small": 8}
PATCH = {"paper": 64, "cpu-small": 32}


def same_pads(kernel, stride, size):
    """TensorFlow 'same' padding of one axis: (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Module):
    """Conv3d with Keras padding: 'same' (possibly asymmetric), 'valid' or zeros(p)."""

    def __init__(self, cin, cout, kernel, stride=1, padding="same"):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride)
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        if self.padding == "same":
            pads = [same_pads(self.kernel, self.stride, s) for s in x.shape[2:]]
        elif self.padding == "valid":
            pads = [(0, 0)] * 3
        else:
            pads = [(self.padding, self.padding)] * 3
        sym = [min(b, a) for b, a in pads]
        extra = []
        for (b, a), s in reversed(list(zip(pads, sym))):
            extra += [b - s, a - s]
        if any(extra):
            x = F.pad(x, extra)
        return F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, sym)


class Up(nn.Module):
    """ConvTranspose3d with Keras 'same' output n·s: crop k − s voxels, the smaller half first."""

    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        crop = kernel - stride
        self.before, self.after = crop // 2, crop - crop // 2
        self.sym = min(self.before, self.after)
        self.up = nn.ConvTranspose3d(cin, cout, kernel, stride, padding=self.sym)

    def forward(self, x):
        y = self.up(x)
        b0, b1 = self.before - self.sym, self.after - self.sym
        if b0 + b1:
            d, h, w = y.shape[2:]
            y = y[:, :, b0 : d - b1, b0 : h - b1, b0 : w - b1]
        return y


class InstanceNorm(nn.Module):
    """keras-contrib InstanceNormalization: per channel (axis=-1) or scalar (axis=None)."""

    def __init__(self, channels, per_channel, eps=1e-3):
        super().__init__()
        n = channels if per_channel else 1
        self.gamma = nn.Parameter(torch.ones(n))
        self.beta = nn.Parameter(torch.zeros(n))
        self.per_channel, self.eps = per_channel, eps

    def forward(self, x):
        dims = (2, 3, 4) if self.per_channel else (1, 2, 3, 4)
        mean = x.mean(dims, keepdim=True)
        std = x.var(dims, unbiased=False, keepdim=True).clamp_min(1e-12).sqrt()
        y = (x - mean) / (std + self.eps)
        shape = (1, -1, 1, 1, 1)
        return y * self.gamma.view(shape) + self.beta.view(shape)


# --- 3D U-Net (docs/published-code.md §3.1) -------------------------------------------


class ConvBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.c1, self.c2 = Conv(cin, cout, 3), Conv(cout, cout, 3)
        self.b1 = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)
        self.b2 = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(x)))


class Unet3d(nn.Module):
    def __init__(self, cin, cout, f):
        super().__init__()
        widths = [f << i for i in range(4)]
        self.enc = nn.ModuleList()
        c = cin
        for w in widths:
            self.enc.append(ConvBlock(c, w))
            c = w
        self.bridge = ConvBlock(c, f << 4)
        c = f << 4
        self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
        for w in reversed(widths):
            self.ups.append(Up(c, w, 2, 2))
            self.dec.append(ConvBlock(2 * w, w))
            c = w
        self.head = Conv(c, cout, 1, padding="valid")

    def forward(self, x):
        skips = []
        for e in self.enc:
            s = e(x)
            x = F.max_pool3d(s, 2)
            skips.append(s)
        x = self.bridge(x)
        for up, dec, s in zip(self.ups, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), s], 1))
        return torch.sigmoid(self.head(x))


# --- Vox2Vox (§4) --------------------------------------------------------------------------


class Down(nn.Module):
    def __init__(self, cin, cout, stride, padding, norm, dropout, slope=0.3):
        super().__init__()
        self.conv = Conv(cin, cout, 4, stride, padding)
        self.norm = InstanceNorm(cout, False) if norm else None
        self.drop = nn.Dropout(0.2) if dropout else None
        self.slope = slope

    def forward(self, x):
        y = self.conv(x)
        if self.norm is not None:
            y = self.norm(y)
        y = F.leaky_relu(y, self.slope)
        return self.drop(y) if self.drop is not None else y


class Vox2VoxGenerator(nn.Module):
    def __init__(self, cin, cout, f, blocks=4):
        super().__init__()
        widths = [f, 2 * f, 4 * f]
        self.enc = nn.ModuleList()
        c = cin
        for i, w in enumerate(widths):
            self.enc.append(Down(c, w, 2, "same", i > 0, True))
            c = w
        b = 8 * f
        self.bin = Down(c, b, 2, "same", True, False)
        self.bconv, self.bnorm = nn.ModuleList(), nn.ModuleList()
        c = b
        for _ in range(blocks):
            self.bconv.append(Conv(c, b, 4))
            self.bnorm.append(InstanceNorm(b, False))
            c = 2 * b
        self.ups, self.unorm = nn.ModuleList(), nn.ModuleList()
        for w in reversed(widths):
            self.ups.append(Up(c, w, 4, 2))
            self.unorm.append(InstanceNorm(w, False))
            c = 2 * w
        self.drop = nn.Dropout(0.2)
        self.out = Up(c, cout, 4, 2)

    def forward(self, x):
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
        x = self.bin(x)
        for conv, norm in zip(self.bconv, self.bnorm):
            y = conv(x)
            x = torch.cat([F.leaky_relu(norm(y), 0.3), y], 1)
        for up, norm, s in zip(self.ups, self.unorm, reversed(skips)):
            u = F.leaky_relu(norm(up(x)), 0.3)
            x = self.drop(torch.cat([u, s], 1))
        return torch.sigmoid(self.out(x))


class Vox2VoxDiscriminator(nn.Module):
    def __init__(self, cin, f):
        super().__init__()
        self.blocks = nn.ModuleList()
        c = cin
        for i, w in enumerate([f, 2 * f, 4 * f]):
            self.blocks.append(Down(c, w, 2, "same", i > 0, True))
            c = w
        self.conv4 = Down(c, 8 * f, 1, 1, True, False)
        self.out = Conv(8 * f, 1, 4, 1, 1)

    def forward(self, image, mask):
        x = torch.cat([image, mask], 1)
        for b in self.blocks:
            x = b(x)
        return self.out(self.conv4(x))


# --- CycleGAN (§5) -------------------------------------------------------------------------


class ConvNormRelu(nn.Module):
    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        self.conv = Conv(cin, cout, kernel, stride)
        self.norm = InstanceNorm(cout, True)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, cin, r):
        super().__init__()
        self.first = ConvNormRelu(cin, r, 3, 1)
        self.conv = Conv(r, r, 3)
        self.norm = InstanceNorm(r, True)

    def forward(self, x):
        return torch.cat([self.norm(self.conv(self.first(x))), x], 1)


class CycleGanGenerator(nn.Module):
    def __init__(self, cin, cout, f, blocks=9):
        super().__init__()
        self.stem = ConvNormRelu(cin, f, 7, 1)
        self.down = nn.ModuleList([ConvNormRelu(f, 2 * f, 3, 2), ConvNormRelu(2 * f, 4 * f, 3, 2)])
        r, c = 4 * f, 4 * f
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            self.blocks.append(Residual(c, r))
            c += r
        self.ups, self.unorm = nn.ModuleList(), nn.ModuleList()
        for w in [2 * f, f]:
            self.ups.append(Up(c, w, 3, 2))
            self.unorm.append(InstanceNorm(w, True))
            c = w
        self.out = Conv(f, cout, 7)
        self.out_norm = InstanceNorm(cout, True)

    def forward(self, x):
        x = self.stem(x)
        for d in self.down:
            x = d(x)
        for b in self.blocks:
            x = b(x)
        for up, norm in zip(self.ups, self.unorm):
            x = F.relu(norm(up(x)))
        return torch.tanh(self.out_norm(self.out(x)))


class CycleGanDiscriminator(nn.Module):
    def __init__(self, cin, f):
        super().__init__()
        specs = [(f, 2, False), (2 * f, 2, True), (4 * f, 2, True), (8 * f, 2, True), (8 * f, 1, True)]
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        c = cin
        for w, s, norm in specs:
            self.convs.append(Conv(c, w, 4, s))
            self.norms.append(InstanceNorm(w, True) if norm else nn.Identity())
            c = w
        self.out = Conv(c, 1, 4, 1)

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = F.leaky_relu(norm(conv(x)), 0.2)
        return self.out(x)


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def build(model, scale, classes):
    """The networks of `model` at `scale` with `classes` image and mask channels."""
    d = WIDTH_DIVISOR[scale]
    if model == "unet3d":
        return {"unet3d": Unet3d(classes, classes, 32 // d)}
    if model == "vox2vox":
        return {
            "generator": Vox2VoxGenerator(classes, classes, 64 // d),
            "discriminator": Vox2VoxDiscriminator(2 * classes, 64 // d),
        }
    if model == "cyclegan":
        return {
            "g_ab": CycleGanGenerator(classes, classes, 32 // d),
            "g_ba": CycleGanGenerator(classes, classes, 32 // d),
            "d_a": CycleGanDiscriminator(classes, 64 // d),
            "d_b": CycleGanDiscriminator(classes, 64 // d),
        }
    raise ValueError(model)


def param_counts(scale, classes):
    """The same dictionary as `seglab models --json`."""
    u = build("unet3d", scale, classes)
    v = build("vox2vox", scale, classes)
    c = build("cyclegan", scale, classes)
    return {
        "unet3d": trainable(u["unet3d"]),
        "vox2vox_generator": trainable(v["generator"]),
        "vox2vox_discriminator": trainable(v["discriminator"]),
        "cyclegan_generator": trainable(c["g_ab"]),
        "cyclegan_discriminator": trainable(c["d_b"]),
    }
