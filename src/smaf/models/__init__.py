"""Networks: the ResNet38d backbone, the CAM/EPS/SMAF heads and the classifier that joins them."""

from smaf.models.build import Classifier, ModelConfig, build_classifier, cam_to_logits
from smaf.models.convert_mxnet import (
    load_imagenet_weights,
    load_mxnet_params,
    load_state_dict_file,
    mxnet_to_resnet38d_state_dict,
)
from smaf.models.heads import CAMHead, EPSHead, SMAFHead, move_background_first
from smaf.models.resnet38d import OUTPUT_STRIDE, ResNet38d
from smaf.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CAMHead",
    "Classifier",
    "EPSHead",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelConfig",
    "OUTPUT_STRIDE",
    "ResNet38d",
    "SMAFHead",
    "build_classifier",
    "cam_to_logits",
    "load_imagenet_weights",
    "load_mxnet_params",
    "load_state_dict_file",
    "move_background_first",
    "mxnet_to_resnet38d_state_dict",
]
