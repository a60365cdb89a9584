"""The module tree of mmdetection 2.11's Mask R-CNN and Cascade Mask R-CNN, in plain PyTorch, for
counting parameters and FLOPs as mmdetection's tools/analysis_tools/get_flops.py does.

get_flops builds the detector, replaces `forward` by `forward_dummy` and hands it to mmcv's
get_model_complexity_info, which hooks the nn.Module types it knows. So what matters here is
which nn.Module types run and how often, and which work is done by functional calls instead.
Written following mmdetection 2.11 (SwinTransformer/Swin-Transformer-Object-Detection):

  models/detectors/two_stage.py  forward_dummy: backbone, neck, rpn_head(x), then
      roi_head.forward_dummy(x, proposals) with proposals = torch.randn(1000, 4)
  models/roi_heads/standard_roi_head.py  forward_dummy: the box head on the 1000 RoIs, the mask
      head on the first 100
  models/roi_heads/cascade_roi_head.py   forward_dummy: every stage's box head on the same 1000
      RoIs, every stage's mask head on the first 100; one RoI extractor per stage
  models/necks/fpn.py            ConvModule lateral (1x1) and output (3x3) convs, no norm or
      activation; top-down F.interpolate and the extra level F.max_pool2d(P5, 1, stride=2) are
      functional calls
  models/dense_heads/rpn_head.py rpn_conv (3x3), F.relu (functional), rpn_cls and rpn_reg (1x1)
  models/roi_heads/roi_extractors/single_level_roi_extractor.py  mmcv.ops.RoIAlign per level
      (here torchvision's RoIAlign: neither is a type the counter hooks)
  models/roi_heads/bbox_heads/convfc_bbox_head.py  shared ConvModules (conv, norm, ReLU),
      flatten, shared fcs each followed by the one nn.ReLU module, fc_cls, fc_reg
  models/roi_heads/mask_heads/fcn_mask_head.py  ConvModules (conv, ReLU), ConvTranspose2d,
      nn.ReLU, conv_logits
  models/backbones/resnet.py     torchvision's module names (conv1, bn1, relu, maxpool, layerN)
  ConvNeXt's object_detection/mmdet/models/backbones/convnext.py  the classifier's layers
      without norm/head, plus norm0..3 (the channels-first LayerNorm class)

The cascade box heads' norm is SyncBN, built as nn.SyncBatchNorm (what mmcv's build_norm_layer
makes of it); in eval mode on one process it runs as batch norm. Imported by
make_complexity_fixtures.py; not a test by itself.
"""

import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.ops import RoIAlign

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnext_ref import Block, LayerNorm  # noqa: E402

NUM_CLASSES = 80
ROI_STRIDES = [4, 8, 16, 32]


class ConvNeXtDet(nn.Module):
    """ConvNeXt's detection backbone: downsample_layers, stages, norm0..3."""

    def __init__(self, depths, dims, layer_scale=1.0):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm(dims[0], data_format="channels_first"))]
        )
        for i in range(1, 4):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm(dims[i - 1], data_format="channels_first"),
                              nn.Conv2d(dims[i - 1], dims[i], 2, 2)))
        self.stages = nn.ModuleList(nn.Sequential(*[Block(dims[i], layer_scale) for _ in range(depths[i])])
                                    for i in range(4))
        for i in range(4):
            self.add_module(f"norm{i}", LayerNorm(dims[i], data_format="channels_first"))
        self.out_channels = list(dims)

    def forward(self, x):
        outs = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            outs.append(getattr(self, f"norm{i}")(x))
        return outs


class ResNetDet(nn.Module):
    """mmdetection's ResNet-50 (pytorch style, torchvision's names), frozen_stages=1, norm_eval."""

    def __init__(self, frozen_stages=1):
        super().__init__()
        tv = torchvision.models.resnet50()
        for name in ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]:
            self.add_module(name, getattr(tv, name))
        frozen = [self.conv1, self.bn1] + [getattr(self, f"layer{i}") for i in range(1, frozen_stages + 1)]
        for m in frozen:
            for p in m.parameters():
                p.requires_grad = False
        self.out_channels = [256, 512, 1024, 2048]

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs


class ConvModule(nn.Module):
    """mmcv's ConvModule: `conv`, then optionally `bn` and `activate` (ReLU)."""

    def __init__(self, inp, out, k, padding=0, norm=None, act=False):
        super().__init__()
        self.conv = nn.Conv2d(inp, out, k, padding=padding, bias=norm is None)
        self.with_norm, self.with_act = norm is not None, act
        if norm == "SyncBN":
            self.bn = nn.SyncBatchNorm(out)
        if act:
            self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.conv(x)
        if self.with_norm:
            x = self.bn(x)
        if self.with_act:
            x = self.activate(x)
        return x


class FPN(nn.Module):
    def __init__(self, in_channels, out=256, num_outs=5):
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvModule(c, out, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(ConvModule(out, out, 3, padding=1) for _ in in_channels)
        self.num_outs = num_outs

    def forward(self, feats):
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                                              mode="nearest")
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs


class RPNHead(nn.Module):
    def __init__(self, c=256, feat=256, anchors=3):
        super().__init__()
        self.rpn_conv = nn.Conv2d(c, feat, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat, anchors, 1)
        self.rpn_reg = nn.Conv2d(feat, anchors * 4, 1)

    def forward(self, feats):
        out = []
        for x in feats:
            x = F.relu(self.rpn_conv(x), inplace=True)
            out.append((self.rpn_cls(x), self.rpn_reg(x)))
        return out


class SingleRoIExtractor(nn.Module):
    """RoIAlign on the level each RoI maps to (finest_scale 56), mmdet's map_roi_levels."""

    def __init__(self, out_size, c=256):
        super().__init__()
        self.roi_layers = nn.ModuleList(RoIAlign(out_size, 1.0 / s, 0, aligned=True) for s in ROI_STRIDES)
        self.out_size, self.c = out_size, c

    def forward(self, feats, rois):
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        lvls = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(min=0, max=3).long()
        out = feats[0].new_zeros(rois.size(0), self.c, self.out_size, self.out_size)
        for i in range(4):
            inds = (lvls == i).nonzero(as_tuple=False).squeeze(1)
            if inds.numel() > 0:
                out[inds] = self.roi_layers[i](feats[i], rois[inds])
        return out


class ConvFCBBoxHead(nn.Module):
    def __init__(self, num_shared_convs, num_shared_fcs, c=256, fc=1024, roi=7, norm=None):
        super().__init__()
        self.shared_convs = nn.ModuleList(ConvModule(c, c, 3, 1, norm=norm, act=True) for _ in range(num_shared_convs))
        fcs, last = [], c * roi * roi
        for _ in range(num_shared_fcs):
            fcs.append(nn.Linear(last, fc))
            last = fc
        self.shared_fcs = nn.ModuleList(fcs)
        self.relu = nn.ReLU(inplace=True)
        self.fc_cls = nn.Linear(last, NUM_CLASSES + 1)
        self.fc_reg = nn.Linear(last, 4 * NUM_CLASSES)

    def forward(self, x):
        for conv in self.shared_convs:
            x = conv(x)
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = self.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class FCNMaskHead(nn.Module):
    def __init__(self, c=256, num_convs=4):
        super().__init__()
        self.convs = nn.ModuleList(ConvModule(c, c, 3, 1, act=True) for _ in range(num_convs))
        self.upsample = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.conv_logits = nn.Conv2d(c, NUM_CLASSES, 1)

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(self.relu(self.upsample(x)))


class StandardRoIHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.bbox_roi_extractor = SingleRoIExtractor(7)
        self.bbox_head = ConvFCBBoxHead(0, 2)
        self.mask_roi_extractor = SingleRoIExtractor(14)
        self.mask_head = FCNMaskHead()

    def forward_dummy(self, x, rois):
        outs = self.bbox_head(self.bbox_roi_extractor(x[:4], rois))
        return outs + (self.mask_head(self.mask_roi_extractor(x[:4], rois[:100])),)


class CascadeRoIHead(nn.Module):
    def __init__(self, stages=3):
        super().__init__()
        self.bbox_roi_extractor = nn.ModuleList(SingleRoIExtractor(7) for _ in range(stages))
        self.bbox_head = nn.ModuleList(ConvFCBBoxHead(4, 1, norm="SyncBN") for _ in range(stages))
        self.mask_roi_extractor = nn.ModuleList(SingleRoIExtractor(14) for _ in range(stages))
        self.mask_head = nn.ModuleList(FCNMaskHead() for _ in range(stages))

    def forward_dummy(self, x, rois):
        outs = ()
        for e, h in zip(self.bbox_roi_extractor, self.bbox_head):
            outs += h(e(x[:4], rois))
        for e, h in zip(self.mask_roi_extractor, self.mask_head):
            outs += (h(e(x[:4], rois[:100])),)
        return outs


class TwoStageDetector(nn.Module):
    """`forward` is mmdet's forward_dummy (what get_flops swaps in)."""

    def __init__(self, backbone, cascade):
        super().__init__()
        self.backbone = backbone
        self.neck = FPN(backbone.out_channels)
        self.rpn_head = RPNHead()
        self.roi_head = CascadeRoIHead() if cascade else StandardRoIHead()

    def forward(self, img):
        x = self.neck(self.backbone(img))
        rpn_outs = self.rpn_head(x)
        proposals = torch.randn(1000, 4, generator=torch.Generator().manual_seed(0)).to(img.device)
        rois = torch.cat([proposals.new_zeros(1000, 1), proposals], dim=1)
        return rpn_outs, self.roi_head.forward_dummy(x, rois)
