"""Every figure of the study, one module per part of the story, each drawn from artifacts only:

==========  ========================================================================  ==================
module      figures                                                                   used by
==========  ========================================================================  ==================
``data``    classes and cells, sample images, slides and their copies, overlaps       notebook 01, report 2
``study``   the paper's Figures 1-3, the comparison, confusions, collapse             notebooks 03-04, report 3-5
``model``   Grad-CAM, first-layer filters, activations, the worst errors              notebook 05, report 6
``final``   the lab's curves, calibration, coverage, confusions by cell               report 6
``common``  the theme, the loss colours, saving as PNG and SVG                        all of them
==========  ========================================================================  ==================

``python -m wbc_utils figures --profile P`` runs :func:`build_all`.
"""
from . import common, data, final, model, study
from .registry import FIGURES, build_all

__all__ = ["FIGURES", "build_all", "common", "data", "final", "model", "study"]
