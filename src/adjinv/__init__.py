"""adjinv: hallucination-free adjoint inversion of CNN classifiers (LAC cascade)."""

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
from .lacs.bundled import LoadedLACs, load_inverter, load_lacs
from .methods.class_directional import (
    class_directional_inversion,
    foreground_energy,
    mask_area_ratio,
)
from .methods.readout import ReadoutInversion, invert_readout, invert_readouts

__version__ = "0.1.0"

__all__ = [
    "AdjinvError",
    "AdjointCascade",
    "AdjointInverter",
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
]
