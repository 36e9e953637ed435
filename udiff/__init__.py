"""udiff: diffusion models from the shell.

One object underlies every model here: a linear Gaussian diffusion per component, in a chosen basis
(see DESIGN in the README). This package root stays free of torch so that `udiff --help` is fast.
"""

__version__ = "0.1.0"
