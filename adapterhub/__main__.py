"""``python -m adapterhub ...`` (and ``accelerate launch -m adapterhub ...``): the same as the ``adapterhub``
command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
