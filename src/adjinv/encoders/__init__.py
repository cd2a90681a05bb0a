"""Encoders: frozen classifiers split into stages at their decimation boundaries."""

from .auto import encoder_from_module
from .registry import imagenet_categories, list_encoders, load_encoder
from .staged import IMAGENET_MEAN, IMAGENET_STD, LinearHead, ModuleHead, StagedEncoder, StageInfo

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LinearHead",
    "ModuleHead",
    "StageInfo",
    "StagedEncoder",
    "encoder_from_module",
    "imagenet_categories",
    "list_encoders",
    "load_encoder",
]
