"""microvae: variational autoencoders for two-phase microstructures.

Every piece of science of the pipeline lives in this package; the Snakemake
rules only call it through the ``microvae`` command line (``microvae.cli``).
"""

__version__ = "0.1.0"
