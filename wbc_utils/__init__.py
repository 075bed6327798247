"""wbc_utils: the code behind the white-blood-cell loss-function study.

The notebooks under ``notebooks/`` stay thin; everything they do lives here,
one module per concern, and data flows one way::

    config, params -> data -> model, losses -> training -> evaluation -> runs -> study
        -> analysis -> figures -> sections -> report

(``ARCHITECTURE.md`` draws the whole map.) Importing this package does not
import TensorFlow; modules that need it import it inside their functions
through :mod:`wbc_utils.tfenv`, which configures the CPU first.
"""

__version__ = "0.1.0"

#: The four classes, in the label order used everywhere (index = label).
CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")

#: Splits of the dataset's ``images/`` folder.
SPLITS = ("TRAIN", "TEST", "TEST_SIMPLE")

#: Native size of every image in the dataset (height, width).
NATIVE_SIZE = (240, 320)

__all__ = ["CLASSES", "NATIVE_SIZE", "SPLITS", "__version__"]
