"""`python -m spakky_saga_mypy [mypy arguments]`: see `spakky_saga_mypy.cli`."""

from spakky_saga_mypy.cli import main

if __name__ == "__main__":
    main()
