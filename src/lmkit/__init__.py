"""lmkit: from raw text to a pre-trained transformer you understand, can measure and can ship.

Subpackages: ``lmkit.data`` (reading, curation, packing), ``lmkit.models`` (the three transformer
families). Modules are imported on use so that ``import lmkit`` stays cheap.
"""

__version__ = "0.1.0"
