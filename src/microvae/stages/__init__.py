"""The stage layer: one function per pipeline stage, taking its input paths, its output paths
and a typed parameter object, and doing all the file and figure I/O around the science.

* :mod:`.data`: synthesize, ingest, segment, pack
* :mod:`.network`: train, sample
* :mod:`.statistics`: evaluate, evaluate_large, summarize
* :mod:`.export`: phase maps as VTK image data (.vti), PNG, TIFF, NPY
"""

# The figures each stage can write, by the name of their option (``--{name}-figure``); for the
# sample stage, with the generation mode each shows (None: the encoded test images).
SAMPLE_FIGURES = {"prior": "prior", "posterior": "posterior", "noise": "noise",
                  "interpolation": "interpolation", "latent_map": None}
EVALUATION_FIGURES = ("s2", "phase_fraction", "chords")
