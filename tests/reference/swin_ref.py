"""A PyTorch Swin Transformer reference for the fixture generators, in two modes.

Written from the semantics of the official code (microsoft/Swin-Transformer
`models/swin_transformer.py`) and of the detection backbone of Swin-Transformer-Object-Detection
(`mmdet/models/backbones/swin_transformer.py`, mmdetection 2.11), with the official parameter
names, so that its state dict is the layout of the published checkpoints:

  patch_embed.{proj,norm}.*, layers.S.blocks.B.{norm1,attn.{relative_position_bias_table,
  relative_position_index,qkv,proj},norm2,mlp.{fc1,fc2}}.*, layers.S.downsample.{norm,reduction}.*
  classifier : + layers.S.blocks.B.attn_mask (shifted blocks), norm.*, head.*
  detection  : + norm0..norm3 (one LayerNorm per output); the mask is built in forward

classifier mode (mode="cls"): the official rule for a stage whose map is not larger than the
  window (one window of the map's size, no shift), the mask a buffer computed at img_size. Map
  sizes at img_size are ceil(img_size / patch), then halved rounding up (patch merging pads odd
  maps, as timm and the detection code do; the official code only accepts even maps).
detection mode (mode="det"): every stage windowed with shift window//2 in odd blocks, the image
  padded right/bottom to the patch size, each block pads its normed map to window multiples and
  then rolls it, the mask is built per forward for the padded size, patch merging pads to even,
  outputs are norm_i(stage output) as [N, C, H, W].

Not a test by itself: imported by make_swin_fixtures.py and bench_swin_tiny.py.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def relative_position_index(w):
    """[w*w, w*w] index into the (2w-1)^2-row bias table: (dy + w - 1) * (2w - 1) + dx + w - 1."""
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + w - 1) * (2 * w - 1) + rel[..., 1] + w - 1


def partition(x, w):
    """[B, H, W, C] (H, W multiples of w) -> [B * nW, w * w, C], windows row-major per image."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def reverse(windows, w, h, wd):
    """Inverse of partition: [B * nW, w * w, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // w) * (wd // w))
    x = windows.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


def shift_mask(hp, wp, w, s):
    """[nW, w*w, w*w]: 0 within a region of the rolled map, -100 across regions."""
    img = torch.zeros(1, hp, wp, 1)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = partition(img, w).squeeze(-1)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class Attention(nn.Module):
    def __init__(self, dim, heads, w):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(w))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.n = w * w

    def forward(self, x, mask):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(b // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.heads, n, n)
        attn = attn.softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, heads, w, shift, mode, resolution):
        super().__init__()
        self.w, self.shift, self.mode = w, shift, mode
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, w)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(4 * dim, dim)
        if mode == "cls" and shift > 0:
            self.register_buffer("attn_mask", shift_mask(resolution, resolution, w, shift))
        else:
            self.attn_mask = None

    def forward(self, x, h, wd, det_mask=None):
        b, l, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, wd, c)
        pad_r = (self.w - wd % self.w) % self.w
        pad_b = (self.w - h % self.w) % self.w
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1], x.shape[2]
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = self.attn_mask if self.mode == "cls" else det_mask
        else:
            mask = None
        x = reverse(self.attn(partition(x, self.w), mask), self.w, hp, wp)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x[:, :h, :wd, :].reshape(b, h * wd, c)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x, h, wd):
        b, _, c = x.shape
        x = F.pad(x.view(b, h, wd, c), (0, 0, 0, wd % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class Layer(nn.Module):
    def __init__(self, dim, depth, heads, w, shift, mode, resolution, downsample):
        super().__init__()
        self.w, self.shift = w, shift
        self.blocks = nn.ModuleList(
            [Block(dim, heads, w, 0 if i % 2 == 0 else shift, mode, resolution) for i in range(depth)]
        )
        self.downsample = PatchMerging(dim) if downsample else None


class PatchEmbed(nn.Module):
    def __init__(self, in_chans, dim, patch):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)


class SwinRef(nn.Module):
    def __init__(self, embed, depths, heads, window=7, img_size=224, num_classes=1000, mode="cls", patch=4,
                 in_chans=3, out_indices=(0, 1, 2, 3)):
        super().__init__()
        assert mode in ("cls", "det")
        self.mode = mode
        self.patch_embed = PatchEmbed(in_chans, embed, patch)
        self.dims = [embed * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList()
        res = -(-img_size // patch)
        for i, d in enumerate(depths):
            if i > 0:
                res = (res + 1) // 2  # patch merging pads odd maps
            if mode == "cls" and res <= window:
                w, shift = res, 0
            else:
                w, shift = window, window // 2
            self.layers.append(Layer(self.dims[i], d, heads[i], w, shift, mode, res, i + 1 < len(depths)))
        self.out_indices = tuple(out_indices)
        if mode == "cls":
            self.norm = nn.LayerNorm(self.dims[-1])
            self.head = nn.Linear(self.dims[-1], num_classes)
        else:
            for i in self.out_indices:
                self.add_module(f"norm{i}", nn.LayerNorm(self.dims[i]))

    def stages(self, x):
        """Stage outputs (before patch merging) as ([B, H*W, C], H, W)."""
        p = self.patch_embed.patch
        _, _, h, wd = x.shape
        if self.mode == "det":
            x = F.pad(x, (0, (p - wd % p) % p, 0, (p - h % p) % p))
        x = self.patch_embed.proj(x)
        h, wd = x.shape[2], x.shape[3]
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        outs = []
        for layer in self.layers:
            mask = None
            if self.mode == "det" and layer.shift > 0:
                hp, wp = math.ceil(h / layer.w) * layer.w, math.ceil(wd / layer.w) * layer.w
                mask = shift_mask(hp, wp, layer.w, layer.shift)
            for blk in layer.blocks:
                x = blk(x, h, wd, mask)
            outs.append((x, h, wd))
            if layer.downsample is not None:
                x = layer.downsample(x, h, wd)
                h, wd = (h + 1) // 2, (wd + 1) // 2
        return outs

    def forward(self, x):
        if self.mode == "cls":
            last = self.stages(x)[-1][0]
            return self.head(self.norm(last).mean(1))
        outs = []
        for i, (y, h, wd) in enumerate(self.stages(x)):
            if i in self.out_indices:
                y = getattr(self, f"norm{i}")(y)
                outs.append(y.view(-1, h, wd, self.dims[i]).permute(0, 3, 1, 2).contiguous())
        return outs


ARCHS = {
    "tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24]),
    "small": (96, [2, 2, 18, 2], [3, 6, 12, 24]),
    "base": (128, [2, 2, 18, 2], [4, 8, 16, 32]),
    "large": (192, [2, 2, 18, 2], [6, 12, 24, 48]),
}


def timm_model(embed, depths, heads, window, img_size, num_classes, **kw):
    import timm

    return timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, num_classes=num_classes, embed_dim=embed,
        depths=tuple(depths), num_heads=tuple(heads), window_size=window, img_size=img_size, drop_path_rate=0.0,
        **kw,
    ).eval()


def official_to_timm(state_dict, model):
    """timm's own converter (timm.models.swin_transformer.checkpoint_filter_fn)."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn({"model": state_dict}, model)


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & ((1 << 64) - 1)
    return h


def formula_su(name, n):
    """(s, u) float64 arrays of length n for tensor NAME: u uniform in [0, 1) from a splitmix64
    finalizer on seed + (j + 1) * golden, seed = FNV-1a of the name; s = 2u - 1."""
    with np.errstate(over="ignore"):
        seed = np.uint64(fnv1a64(name))
        j1 = np.arange(1, n + 1, dtype=np.uint64)
        z = seed + j1 * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * (2.0**-53)
    return 2.0 * u - 1.0, u


def formula_value(name, shape):
    """The value of parameter NAME: matrices s * sqrt(3 / fan_in) (variance 1 / fan_in), the bias
    table s (uniform in [-1, 1]), norm weights 1 + 0.2 s, biases 0.1 s; inputs 1.5 s."""
    n = math.prod(shape)
    s, _ = formula_su(name, n)
    if name.endswith("relative_position_bias_table"):
        v = s
    elif name.startswith("input") or name.startswith("probe"):
        v = 1.5 * s
    elif name.endswith(".weight") and len(shape) >= 2:
        v = s * math.sqrt(3.0 / math.prod(shape[1:]))
    elif name.endswith(".weight"):
        v = 1.0 + 0.2 * s
    elif name.endswith(".bias"):
        v = 0.1 * s
    else:
        raise ValueError(name)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def fill_formula(model):
    """Every parameter of MODEL (official names) from formula_value; buffers untouched."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(formula_value(name, tuple(p.shape)))
