"""nucleoscope: single-cell nuclear image analysis for fluorescence microscopy.

Segment every nucleus, quality-check, measure and classify it. The core is pure functions on numpy
arrays (images ``(Y, X)`` float32, labels ``(Y, X)`` int32 with 0 = background); I/O, the command line
and the GUI are thin layers around it. Importing this package never imports torch.
"""

from __future__ import annotations

import logging

from ._errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]

# Library code logs; only the CLI installs handlers.
logging.getLogger(__name__).addHandler(logging.NullHandler())
