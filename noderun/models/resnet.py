"""The Table-1 ResNet: downsampling, six residual blocks of 64 channels, head."""

from typing import Any, Mapping

from torch import nn

from noderun.models.blocks import CHANNELS, ResBlock, checked_downsampling, classifier_head, downsampling


def build_resnet(downsampling_method: str = "res", blocks: int = 6, num_classes: int = 10) -> nn.Sequential:
    """Return the ResNet of the reference example with `blocks` residual blocks."""
    features = [ResBlock(CHANNELS, CHANNELS) for _ in range(blocks)]
    return nn.Sequential(downsampling(downsampling_method), *features, classifier_head(num_classes))


def build(cfg: Mapping[str, Any], solver: Any = None) -> nn.Sequential:
    """Return the registry's ResNet from its config block (`downsampling`, `blocks`; it has no solver)."""
    return build_resnet(checked_downsampling(cfg.get("downsampling", "res")), blocks=int(cfg.get("blocks", 6)))
