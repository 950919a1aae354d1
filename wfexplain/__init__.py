"""wfexplain: multi-class unlearning by weight filtering, with explanations.

Implements Poppi et al., "Multi-Class Unlearning for Image Classification via Weight
Filtering" (arXiv 2304.02049). Public API: :func:`load`, :func:`bake`,
:class:`FilteredModel`, :class:`Manifest`, :func:`create_backbone`, :func:`list_backbones`.
"""

__version__ = "0.1.0"

from .backbones import create_backbone, list_backbones
from .checkpoint import CheckpointError, load
from .filtering import FilteredModel, bake
from .manifest import Manifest

__all__ = ["CheckpointError", "FilteredModel", "Manifest", "__version__", "bake", "create_backbone", "list_backbones", "load"]
