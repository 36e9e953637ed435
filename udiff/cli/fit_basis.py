"""`udiff fit-basis`: GUD bases: PCA, DCT, Haar.

Registered so that scripts can rely on the name; not yet implemented.
"""

from .options import not_yet

command = not_yet("fit-basis", "GUD bases: PCA, DCT, Haar")
