"""wbc_utils: the code behind the white-blood-cell loss-function study.

The notebooks under ``notebooks/`` stay thin; everything they do lives here,
one module per concern, and data flows one way::

    data -> model -> losses -> training -> evaluation -> figures -> report

Importing this package does not import TensorFlow; modules that need it import
it lazily through :mod:`wbc_utils.tfenv`, which configures the CPU first.
"""

__version__ = "0.1.0"

#: The four classes, in the label order used everywhere (index = label).
CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")

#: Splits of the dataset's ``images/`` folder.
SPLITS = ("TRAIN", "TEST", "TEST_SIMPLE")

__all__ = ["CLASSES", "SPLITS", "__version__"]
