"""wfexplain: multi-class unlearning by weight filtering, with explanations.

Implements Poppi et al., "Multi-Class Unlearning for Image Classification via Weight
Filtering" (arXiv 2304.02049). Public API: :func:`load`, :func:`save`, :func:`wrap`,
:func:`unlearn`, :func:`evaluate`, :func:`bake`, :func:`coverage`, :func:`remove`, :class:`FilteredModel`, :class:`Manifest`,
:class:`UnlearnConfig`, :class:`RemovalConfig`, :class:`GateSite`, :func:`create_backbone`, :func:`list_backbones`.
"""

from ._version import __version__
from .api import evaluate, probe, save, unlearn, wrap
from .backbones import create_backbone, list_backbones
from .checkpoint import CheckpointError, load
from .configs import RemovalConfig, UnlearnConfig
from .filtering import FilteredModel, bake
from .gate_coverage import coverage
from .gates import ungated_copy
from .manifest import Manifest
from .removal import remove
from .sites import GateSite

__all__ = ["CheckpointError", "FilteredModel", "GateSite", "Manifest", "RemovalConfig", "UnlearnConfig", "__version__",
           "bake", "coverage", "create_backbone", "evaluate", "list_backbones", "load", "probe", "remove", "save", "ungated_copy",
           "unlearn", "wrap"]
