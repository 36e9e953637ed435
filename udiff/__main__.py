"""`python -m udiff` (also what torchrun runs)."""

from udiff.cli import main

if __name__ == "__main__":
    main()
