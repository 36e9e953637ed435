"""Errors that are the user's to fix: bad recipes, paths, data and artifacts.

The CLI turns every `UdiffError` into one line on stderr and exit status 2; anything else is a bug and
keeps its traceback. No third-party imports here.
"""


class UdiffError(Exception):
    """A problem with the user's input, stated in one line that names it and says what would be right."""


class RecipeError(UdiffError):
    """A recipe key, value or section is wrong."""


class ArtifactError(UdiffError):
    """An artifact is missing, corrupted, of the wrong kind, or made by an incompatible udiff."""


class DataError(UdiffError):
    """A data source cannot be found or read, or has the wrong shape."""


class NonFiniteResult(UdiffError):
    """The work produced NaN or Inf (a diverged sampler, a broken model): exit status 1, nothing written."""

    exit_code = 1


class SolverFailed(UdiffError):
    """A numerical solver gave up (no usable step, step size underflow, too many steps): exit status 1, nothing
    written."""

    exit_code = 1
