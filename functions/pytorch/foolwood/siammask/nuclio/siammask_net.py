"""The SiamMask-sharp network (Wang et al., CVPR 2019; foolwood/SiamMask ``experiments/siammask_sharp``), with
module names that load the official ``SiamMask_DAVIS.pth`` as it is.

ResNet-50 to layer3 (layer2 with a 3×3 strided shortcut and no padding in its first block, layer3 dilated
by 2) and a 1×1 adjust layer to 256 channels (the exemplar's 15×15 map cut to its central 7×7); depth-wise
cross-correlation heads for the RPN (2 scores and 4 box offsets per anchor) and the mask (a 63×63 mask per
position); the refinement module that rebuilds a 127×127 mask from the correlation at one position and the
search image's ResNet features around it. Every module works on a batch of objects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        padding = dilation if dilation > 1 else 2 - stride  # a strided block has no padding (as trained)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """conv1 (no padding) to layer3; returns the four stages the refinement and the heads use."""

    def __init__(self):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(64, 3)
        self.layer2 = self._layer(128, 4, stride=2)
        self.layer3 = self._layer(256, 6, dilation=2)

    def _layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        first_dilation = dilation // 2 if dilation > 1 else 1
        if stride == 1 and dilation == 1:
            shortcut = nn.Conv2d(self.inplanes, out, 1, bias=False)
        else:  # a 3×3 shortcut: strided without padding, or at the first block's dilation
            shortcut = nn.Conv2d(self.inplanes, out, 3, stride=stride, bias=False,
                                 padding=first_dilation if dilation > 1 else 0, dilation=first_dilation)
        layers = [Bottleneck(self.inplanes, planes, stride, nn.Sequential(shortcut, nn.BatchNorm2d(out)),
                             dilation=first_dilation)]
        self.inplanes = out
        layers += [Bottleneck(out, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p0 = F.relu(self.bn1(self.conv1(x)))
        p1 = self.layer1(self.maxpool(p0))
        p2 = self.layer2(p1)
        return p0, p1, p2, self.layer3(p2)


class Adjust(nn.Module):
    def __init__(self, inplane: int = 1024, outplane: int = 256):
        super().__init__()
        self.downsample = nn.Sequential(nn.Conv2d(inplane, outplane, 1, bias=False), nn.BatchNorm2d(outplane))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        return x[:, :, 4:-4, 4:-4] if x.size(3) < 20 else x  # the exemplar: its central 7×7


class Features(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = ResNet50()
        self.downsample = Adjust()

    def forward(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        stages = self.features(x)
        return stages, self.downsample(stages[-1])


def _conv_bn_relu(channels: int, hidden: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, hidden, kernel, bias=False), nn.BatchNorm2d(hidden), nn.ReLU())


class DepthCorr(nn.Module):
    """Depth-wise cross-correlation of the search features with each object's own template features."""

    def __init__(self, channels: int, hidden: int, out_channels: int):
        super().__init__()
        self.conv_kernel = _conv_bn_relu(channels, hidden, 3)
        self.conv_search = _conv_bn_relu(channels, hidden, 3)
        self.head = nn.Sequential(*_conv_bn_relu(hidden, hidden, 1), nn.Conv2d(hidden, out_channels, 1))

    def correlate(self, kernel: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        kernel, search = self.conv_kernel(kernel), self.conv_search(search)
        batch, channels = kernel.shape[:2]
        out = F.conv2d(search.reshape(1, batch * channels, *search.shape[2:]),
                       kernel.reshape(batch * channels, 1, *kernel.shape[2:]), groups=batch * channels)
        return out.reshape(batch, channels, *out.shape[2:])

    def forward(self, kernel: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return self.head(self.correlate(kernel, search))


class RPN(nn.Module):
    def __init__(self, anchors: int = 5):
        super().__init__()
        self.cls = DepthCorr(256, 256, 2 * anchors)
        self.loc = DepthCorr(256, 256, 4 * anchors)


class MaskHead(nn.Module):
    def __init__(self, size: int = 63):
        super().__init__()
        self.mask = DepthCorr(256, 256, size * size)


def _two_convs(channels: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(hidden, out, 3, padding=1), nn.ReLU())


class Refine(nn.Module):
    """The mask at one position of the correlation map, refined with the search image's stages 0-2 around it."""

    def __init__(self):
        super().__init__()
        self.v0, self.v1, self.v2 = _two_convs(64, 16, 4), _two_convs(256, 64, 16), _two_convs(512, 128, 32)
        self.h2, self.h1, self.h0 = _two_convs(32, 32, 32), _two_convs(16, 16, 16), _two_convs(4, 4, 4)
        self.deconv = nn.ConvTranspose2d(256, 32, 15, 15)
        self.post0 = nn.Conv2d(32, 16, 3, padding=1)
        self.post1 = nn.Conv2d(16, 4, 3, padding=1)
        self.post2 = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, stages: tuple[torch.Tensor, ...], corr: torch.Tensor, row: int, col: int) -> torch.Tensor:
        """Logits (N, 127, 127) for position (row, col) of the 25×25 score grid (same for every object)."""
        p0 = F.pad(stages[0], [16] * 4)[:, :, 4 * row:4 * row + 61, 4 * col:4 * col + 61]
        p1 = F.pad(stages[1], [8] * 4)[:, :, 2 * row:2 * row + 31, 2 * col:2 * col + 31]
        p2 = F.pad(stages[2], [4] * 4)[:, :, row:row + 15, col:col + 15]
        out = self.deconv(corr[:, :, row, col].reshape(-1, 256, 1, 1))
        out = self.post0(F.interpolate(self.h2(out) + self.v2(p2), size=(31, 31)))  # nearest, as trained
        out = self.post1(F.interpolate(self.h1(out) + self.v1(p1), size=(61, 61)))
        out = self.post2(F.interpolate(self.h0(out) + self.v0(p0), size=(127, 127)))
        return out.reshape(-1, 127, 127)


class SiamMask(nn.Module):
    """SiamMask-sharp: ``template`` once per object, ``track`` per frame, ``refine`` at the chosen position."""

    def __init__(self, anchors: int = 5):
        super().__init__()
        self.features = Features()
        self.rpn_model = RPN(anchors)
        self.mask_model = MaskHead()
        self.refine_model = Refine()

    def template(self, crops: torch.Tensor) -> torch.Tensor:
        """Template features (N, 256, 7, 7) of exemplar crops (N, 3, 127, 127), BGR 0..255."""
        return self.features(crops)[1]

    def track(self, templates: torch.Tensor, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Scores (N, 10, 25, 25), box offsets (N, 20, 25, 25), and what :meth:`refine` needs (the search
        stages and the mask correlation), for search crops (N, 3, 255, 255) of the objects."""
        stages, search = self.features(crops)
        cls = self.rpn_model.cls(templates, search)
        loc = self.rpn_model.loc(templates, search)
        corr = self.mask_model.mask.correlate(templates, search)
        return cls, loc, stages, corr

    def refine(self, stages: tuple[torch.Tensor, ...], corr: torch.Tensor, row: int, col: int) -> torch.Tensor:
        return self.refine_model(stages, corr, row, col)
