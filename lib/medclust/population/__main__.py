"""``python -m medclust.population`` (:func:`medclust.population.cli.main`). The task functions
live in importable modules, so Dask pickles them by reference, not as ``__main__``'s."""

import sys

from medclust.population.cli import main

if __name__ == "__main__":
    sys.exit(main())
