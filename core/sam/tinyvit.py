"""TinyViT image encoder for SAM ("vit_t", the encoder MobileSAM distilled from SAM ViT-H).

Written for this project; it computes what MobileSAM's reference TinyViT
computes, and its parameter names are exactly the keys of the published
``mobile_sam.pt`` (so that checkpoint loads with strict key matching).
Heavy lifting that is generic (prompt encoder, mask decoder, ``Sam``) comes
from ``segment_anything``; this module only adds the image encoder.

Shapes for the 5M configuration (``TinyViTConfig()``), batch B, input
(B, 3, 1024, 1024) float32 normalised pixels (``Sam.preprocess``):

=================  ======================================  ====================
stage              what                                     output
=================  ======================================  ====================
patch_embed        3x3/2 conv-BN, GELU, 3x3/2 conv-BN       (B, 64, 256, 256)
layers[0]          2 MBConv blocks (inverted residual)      (B, 64, 256, 256)
 .downsample       patch merging, stride 2                  (B, 128*128, 128)
layers[1]          2 blocks: 4 heads, 7x7 windows           (B, 128*128, 128)
 .downsample       patch merging, stride 2                  (B, 64*64, 160)
layers[2]          6 blocks: 5 heads, 14x14 windows         (B, 64*64, 160)
 .downsample       patch merging, stride 1 (MobileSAM)      (B, 64*64, 320)
layers[3]          2 blocks: 10 heads, 7x7 windows          (B, 64*64, 320)
neck               SAM's 1x1 conv, LN2d, 3x3 conv, LN2d     (B, 256, 64, 64)
=================  ======================================  ====================

Token tensors are (B, H*W, C) in row-major (y, x) order; image tensors are
NCHW. A TinyViT block is: windowed attention (pre-LayerNorm inside the
attention, learned per-head bias indexed by the absolute (dy, dx) offset
between two tokens of a window, windows zero-padded at the bottom/right
edges) + residual, a 3x3 depthwise conv-BN, then an MLP (pre-LayerNorm,
GELU) + residual. ``norm_head``/``head`` (an ImageNet classifier) are unused
but kept so that the checkpoint's key set matches exactly.

``build_sam_vit_t()`` assembles the whole SAM with segment_anything's
PromptEncoder/MaskDecoder; built right after ``torch.manual_seed(s)`` its
random weights equal those of MobileSAM's ``sam_model_registry["vit_t"]()``
after the same seed (same modules, created and initialised in the same
order). Weights are loaded by ``core.models``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

#: (height, width) of a token grid.
HW = Tuple[int, int]


@dataclass(frozen=True)
class TinyViTConfig:
    """Architecture of a TinyViT SAM encoder; the defaults are MobileSAM's (TinyViT-5M, 1024 px).

    embed_dims/depths: channels and block count per stage (stage 0 is convolutional);
    num_heads/window_sizes: per stage (stage 0's are unused); merge_strides: stride of
    the patch merging after stages 0..n-2 (MobileSAM keeps 64x64 before the last stage);
    out_chans: channels of SAM's image embedding.
    """

    img_size: int = 1024
    in_chans: int = 3
    embed_dims: Tuple[int, ...] = (64, 128, 160, 320)
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: Tuple[int, ...] = (7, 7, 14, 7)
    merge_strides: Tuple[int, ...] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    num_classes: int = 1000
    out_chans: int = 256

    @property
    def embedding_size(self) -> int:
        """Side of the output grid: img_size / 4 (patch embedding) / product of merge strides."""
        side = self.img_size // 4
        for stride in self.merge_strides:
            side //= stride
        return side


# --------------------------------------------------------------------- building blocks
class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (keys ``c.*``, ``bn.*``); NCHW -> NCHW."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel, stride, padding, groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)

    def fused_weight_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the one Conv2d that equals this conv + BN in eval mode."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = self.c.weight * scale.reshape(-1, 1, 1, 1)
        return weight, bn.bias - bn.running_mean * scale


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 conv-BN with GELU between: (B, 3, S, S) -> (B, dim, S/4, S/4)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project (+ input), GELU after each.

    (B, C, H, W) -> (B, C, H, W). The projection's BN starts at zero (identity block).
    """

    def __init__(self, dim: int, expand_ratio: float):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, GELU, 3x3 depthwise conv with `stride`, GELU, 1x1 conv (all conv-BN).

    Input (B, C, H, W), or tokens (B, H*W, C) with ``hw=(H, W)``; output tokens
    (B, H'*W', out_dim) and (H', W') where H' = ceil(H / stride).
    """

    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor, hw: HW | None = None) -> Tuple[torch.Tensor, HW]:
        if x.dim() == 3:
            x = tokens_to_image(x, hw)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


def tokens_to_image(x: torch.Tensor, hw: HW) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) (a view)."""
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, hw[0], hw[1])


def window_offset_index(h: int, w: int) -> torch.Tensor:
    """(h*w, h*w) int64: for tokens i, j of an h x w window, the bias slot |dy_ij| * w + |dx_ij|.

    The slots are the offsets numbered as they first occur when every (token,
    token) pair is visited in row-major order, which is the layout of the
    ``attention_biases`` tables in TinyViT checkpoints: (heads, h*w).
    """
    ys = torch.arange(h).repeat_interleave(w)
    xs = torch.arange(w).repeat(h)
    return (ys[:, None] - ys[None, :]).abs() * w + (xs[:, None] - xs[None, :]).abs()


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window, with LayerNorm in front and a learned offset bias.

    (N, L, C) windows of L = window^2 tokens -> (N, L, C). qkv rows are grouped per
    head as [q (d), k (d), v (d)], d = C / heads; scores are q.k / sqrt(d) plus
    ``attention_biases[head, window_offset_index]``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer("bias_index", window_offset_index(window_size, window_size), persistent=False)

    def bias(self) -> torch.Tensor:
        """The (heads, L, L) additive attention bias."""
        return self.attention_biases[:, self.bias_index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(n, length, self.num_heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each (N, heads, L, d)
        scores = (q @ k.transpose(-2, -1)) * self.scale + self.bias()
        out = scores.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(n, length, -1))


class TokenMlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear: (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def window_partition(x: torch.Tensor, hw: HW, window: int) -> Tuple[torch.Tensor, HW]:
    """(B, H*W, C) tokens -> (B * nH * nW, window^2, C) windows, zero-padded at bottom/right.

    Returns the windows and the padded size (pH, pW); windows are ordered row-major
    over the grid of windows, tokens row-major inside each window.
    """
    b, _, c = x.shape
    h, w = hw
    x = x.view(b, h, w, c)
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    ph, pw = h + pad_h, w + pad_w
    x = x.view(b, ph // window, window, pw // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c), (ph, pw)


def window_merge(windows: torch.Tensor, hw: HW, padded: HW, window: int) -> torch.Tensor:
    """Inverse of ``window_partition``: windows -> (B, H*W, C) tokens (padding dropped)."""
    ph, pw = padded
    c = windows.shape[-1]
    x = windows.view(-1, ph // window, pw // window, window, window, c).transpose(2, 3)
    x = x.reshape(-1, ph, pw, c)[:, :hw[0], :hw[1]]
    return x.reshape(x.shape[0], hw[0] * hw[1], c)


class TinyViTBlock(nn.Module):
    """Windowed attention + residual, 3x3 depthwise conv-BN, MLP + residual: (B, H*W, C) -> same."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int):
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.mlp = TokenMlp(dim, int(dim * mlp_ratio))
        pad = local_conv_size // 2
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, pad, groups=dim)

    def forward(self, x: torch.Tensor, hw: HW) -> torch.Tensor:
        ws = self.window_size
        if hw == (ws, ws):
            y = self.attn(x)
        else:
            windows, padded = window_partition(x, hw, ws)
            y = window_merge(self.attn(windows), hw, padded, ws)
        x = x + y
        x = self.local_conv(tokens_to_image(x, hw)).flatten(2).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks on (B, C, H, W), then patch merging to tokens."""

    def __init__(self, blocks: list, downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, hw: HW) -> Tuple[torch.Tensor, HW]:
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is None:
            return x.flatten(2).transpose(1, 2), hw
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1..: TinyViT blocks on (B, H*W, C) tokens, then (except the last) patch merging."""

    def __init__(self, blocks: list, downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, hw: HW) -> Tuple[torch.Tensor, HW]:
        for blk in self.blocks:
            x = blk(x, hw)
        if self.downsample is None:
            return x, hw
        return self.downsample(x, hw)


def _neck(in_chans: int, out_chans: int) -> nn.Sequential:
    """SAM's encoder neck: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (no conv biases)."""
    from segment_anything.modeling.common import LayerNorm2d

    return nn.Sequential(nn.Conv2d(in_chans, out_chans, 1, bias=False), LayerNorm2d(out_chans),
                         nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans))


def _init_linear_layers(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) Linear weights and zero biases, in module order (TinyViT's init)."""
    from timm.layers import trunc_normal_

    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)


# --------------------------------------------------------------------- the encoder
class TinyViTImageEncoder(nn.Module):
    """SAM image encoder: (B, 3, S, S) float32 preprocessed pixels -> (B, out_chans, S/16, S/16).

    ``img_size`` is what segment_anything's ``Sam``/``SamPredictor`` and
    ``core.sam.segmenter`` read to resize images (longest side to S, zero-padded square).
    """

    def __init__(self, cfg: TinyViTConfig = TinyViTConfig()):
        super().__init__()
        self.cfg = cfg
        self.img_size = cfg.img_size
        dims = cfg.embed_dims
        last = len(dims) - 1
        self.patch_embed = PatchEmbed(cfg.in_chans, dims[0])
        self.layers = nn.ModuleList()
        for i, dim in enumerate(dims):  # blocks before merging: the creation order fixes the random init
            if i == 0:
                blocks = [MBConv(dim, cfg.mbconv_expand_ratio) for _ in range(cfg.depths[0])]
            else:
                blocks = [TinyViTBlock(dim, cfg.num_heads[i], cfg.window_sizes[i], cfg.mlp_ratio,
                                       cfg.local_conv_size) for _ in range(cfg.depths[i])]
            merge = PatchMerging(dim, dims[i + 1], cfg.merge_strides[i]) if i < last else None
            self.layers.append(ConvStage(blocks, merge) if i == 0 else AttentionStage(blocks, merge))
        self.norm_head = nn.LayerNorm(dims[-1])  # unused classifier, kept for the checkpoint keys
        self.head = nn.Linear(dims[-1], cfg.num_classes)
        _init_linear_layers(self)
        self.neck = _neck(dims[-1], cfg.out_chans)

    def features(self, x: torch.Tensor) -> Tuple[torch.Tensor, HW]:
        """The last stage's tokens (B, h*w, C_last) and their grid (h, w)."""
        x = self.patch_embed(x)
        hw = (x.shape[2], x.shape[3])
        for layer in self.layers:
            x, hw = layer(x, hw)
        return x, hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, hw = self.features(x)
        return self.neck(tokens_to_image(tokens, hw))


def build_sam_vit_t(cfg: TinyViTConfig = TinyViTConfig()):
    """A segment_anything ``Sam`` with the TinyViT encoder (MobileSAM's "vit_t"), random weights, eval mode.

    Prompt encoder and mask decoder are SAM's (256-d, 3 multimask outputs); pixel
    mean/std are SAM's. Weights come from ``core.models.load_sam``.
    """
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    side = cfg.embedding_size
    encoder = TinyViTImageEncoder(cfg)
    prompt_encoder = PromptEncoder(embed_dim=cfg.out_chans, image_embedding_size=(side, side),
                                   input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=16)
    transformer = TwoWayTransformer(depth=2, embedding_dim=cfg.out_chans, mlp_dim=2048, num_heads=8)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer=transformer, transformer_dim=cfg.out_chans,
                          iou_head_depth=3, iou_head_hidden_dim=256)
    sam = Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder,
              pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    return sam.eval()


def is_tinyvit(module) -> bool:
    """True for a TinyViTImageEncoder, or a Sam whose image encoder is one."""
    return isinstance(getattr(module, "image_encoder", module), TinyViTImageEncoder)
