"""`udiff eval-fid`: FID against reference statistics.

Registered so that scripts can rely on the name; not yet implemented.
"""

from .options import not_yet

command = not_yet("eval-fid", "FID against reference statistics")
