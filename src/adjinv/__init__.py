"""adjinv: hallucination-free adjoint inversion of CNN classifiers (LAC cascade)."""

from .analysis.attention import HybridAttentionClassifier
from .analysis.class_directional import (
    class_directional_inversion,
    foreground_energy,
    mask_area_ratio,
)
from .analysis.covvol import covariance_volume_select
from .analysis.ecr import ecr_ablation, energy_concentration_ratio
from .analysis.readout import ReadoutInversion, invert_readout, invert_readouts
from .analysis.superposition import superposition_statistics
from .api import Inverter
from .core.cascade import AdjointCascade
from .core.inverter import AdjointInverter, Inversion
from .core.lac import LACBank, LocalAdjointCorrector
from .core.simplex import simplex_measure
from .core.stagedict import StageDict
from .encoders import (
    LinearHead,
    ModuleHead,
    StagedEncoder,
    encoder_from_module,
    list_encoders,
    load_encoder,
)
from .errors import AdjinvError
from .pretrained import LoadedLACs, load_inverter, load_lacs

__version__ = "0.1.0"

__all__ = [
    "AdjinvError",
    "AdjointCascade",
    "AdjointInverter",
    "HybridAttentionClassifier",
    "Inversion",
    "Inverter",
    "LACBank",
    "LinearHead",
    "LoadedLACs",
    "LocalAdjointCorrector",
    "ModuleHead",
    "ReadoutInversion",
    "StageDict",
    "StagedEncoder",
    "class_directional_inversion",
    "covariance_volume_select",
    "ecr_ablation",
    "energy_concentration_ratio",
    "encoder_from_module",
    "foreground_energy",
    "invert_readout",
    "invert_readouts",
    "list_encoders",
    "load_encoder",
    "load_inverter",
    "load_lacs",
    "mask_area_ratio",
    "simplex_measure",
    "superposition_statistics",
]
