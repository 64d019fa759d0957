"""The registry of generation modes: one record per mode, from which the sampler, the command
line, the evaluation, the figures and the export derive every list of modes (no PyTorch here,
so that the command line starts fast).

Adding a mode: a :class:`Mode` in :data:`REGISTRY`, its sampler in :mod:`microvae.sample`
(registered with ``@unseeded_sampler`` or ``@encoded_sampler`` under the same name), and its
test. ``microvae.sample`` documents what each mode draws.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    """One generation mode.

    ``seeded``: made from encoded real test images (no new microstructure: it is not what a
    generator is judged on). ``models``: the architectures that have it (``table1`` latent
    vectors, ``conv`` latent grids). ``needs``: the data it is fitted to or made from
    (``train``, ``val``: splits of the data set, encoded; ``regions``: the training regions;
    ``test``: the test images, encoded). ``trained_prior``: needs a prior trained after the VAE (rule
    train_prior). ``sizes``: generated also at every size of ``sample.sizes`` (conv models).
    ``figure``: the sample stage's figure that shows it. ``help``: one line for the command
    line.
    """

    name: str
    help: str
    seeded: bool = False
    models: tuple[str, ...] = ("table1", "conv")
    needs: tuple[str, ...] = ()
    trained_prior: bool = False
    sizes: bool = False
    figure: str = "prior"


# Order: of tables and figures; among the unseeded modes it also breaks ties when the
# evaluation chooses a mode on val.
REGISTRY: tuple[Mode, ...] = (
    Mode("prior", "z ~ N(0, I)", sizes=True),
    Mode("field", "a Gaussian random field fitted to the encoded training windows",
         models=("conv",), needs=("regions",), sizes=True),
    Mode("diffusion", "the diffusion prior of --diffusion", trained_prior=True, sizes=True),
    Mode("aggregate", "the Gaussian fitted to the encoded training images", models=("table1",),
         needs=("train",)),
    Mode("mixture", "a Gaussian mixture fitted to the encoded training images, chosen on val",
         models=("table1",), needs=("train", "val")),
    Mode("posterior", "draws of eq. 1 on test images", seeded=True, needs=("test",),
         figure="posterior"),
    Mode("noise", "z_mean + sigma * eps of test images", seeded=True, needs=("test",),
         figure="noise"),
    Mode("interpolation", "midpoints and paths between test images", seeded=True,
         needs=("test",), figure="interpolation"),
)
BY_NAME = {mode.name: mode for mode in REGISTRY}

MODES = tuple(mode.name for mode in REGISTRY)
# No real image seeds them: what a generator is judged on.
UNSEEDED_MODES = tuple(mode.name for mode in REGISTRY if not mode.seeded)
# Made from encoded real images (seeded by them).
ENCODED_MODES = tuple(mode.name for mode in REGISTRY if mode.seeded)
# Fitted to the encoded training images.
FITTED_MODES = tuple(mode.name for mode in REGISTRY if "train" in mode.needs)
# Latent grids (conv models only).
SPATIAL_ONLY = tuple(mode.name for mode in REGISTRY if mode.models == ("conv",))
# Generated at every size of sample.sizes (by conv models).
SIZED_MODES = tuple(mode.name for mode in REGISTRY if mode.sizes)
# Need a prior trained after the VAE (rule train_prior).
TRAINED_PRIOR_MODES = tuple(mode.name for mode in REGISTRY if mode.trained_prior)
# Need a data set (--dataset).
DATA_MODES = tuple(mode.name for mode in REGISTRY if mode.needs)
# Keys of the config's diffusion section that the sample rule reads (a change re-samples and
# does not re-train the prior).
DIFFUSION_SAMPLING_KEYS = ("sampling_steps", "guidance", "guidance_schedule", "target_texture")
# The sample stage's figures, with the modes each can show (latent_map: the encoded test
# images, which every seeded mode encodes).
SAMPLE_FIGURES = {**{mode.figure: tuple(m.name for m in REGISTRY if m.figure == mode.figure)
                     for mode in REGISTRY}, "latent_map": ENCODED_MODES}
# What ``--mode`` accepts.
COMMAND_LINE_MODES = ("all", *MODES)


def in_mode_order(names):
    """``names`` (mode names) in the order of :data:`MODES`, for tables and figures."""
    return tuple(m for m in MODES if m in names)


def modes_of(architecture: str, trained_priors=()) -> tuple[str, ...]:
    """The modes a model of ``architecture`` has (``trained_priors``: the trained priors at
    hand)."""
    return tuple(mode.name for mode in REGISTRY if architecture in mode.models
                 and (not mode.trained_prior or mode.name in trained_priors))


def needs_of(names) -> set[str]:
    """The data the modes ``names`` need together (see :class:`Mode`)."""
    return {need for name in names for need in BY_NAME[name].needs}


def mode_summary() -> str:
    """One line per mode for the command line's help."""
    return "; ".join(f"{mode.name}: {mode.help}"
                     + ("" if len(mode.models) > 1 else f" ({mode.models[0]} models)")
                     for mode in REGISTRY)
