"""The generation modes: one list that the sampler, the command line, the evaluation, the
figures and the export all read (no PyTorch here, so that the command line starts fast).

``microvae.sample`` documents what each mode draws.
"""

MODES = ("prior", "aggregate", "mixture", "field", "diffusion", "posterior", "noise",
         "interpolation")
# Fitted to the encoded training images as vectors (Table 1 models only).
FITTED_MODES = ("aggregate", "mixture")
# Latent grids (conv models only).
SPATIAL_ONLY = ("field", "diffusion")
# Need a prior trained after the VAE (rule train_prior).
TRAINED_PRIOR_MODES = ("diffusion",)
# Keys of the config's diffusion section that the sample rule reads (a change re-samples and
# does not re-train the prior).
DIFFUSION_SAMPLING_KEYS = ("sampling_steps", "guidance")
# Made from encoded real images (seeded by them).
ENCODED_MODES = ("posterior", "noise", "interpolation")
# No real image seeds them: what a generator is judged on. Their order breaks ties when the
# evaluation chooses a mode on val.
UNSEEDED_MODES = ("prior", "field", "diffusion", "aggregate", "mixture")
# What ``--mode`` accepts.
COMMAND_LINE_MODES = ("all", *MODES)


def in_mode_order(names):
    """``names`` (mode names) in the order of :data:`MODES`, for tables and figures."""
    return tuple(m for m in MODES if m in names)
