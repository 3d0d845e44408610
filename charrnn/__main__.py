"""`python -m charrnn` is the same as the `charrnn` command."""

from charrnn.cli import main

if __name__ == "__main__":
    main()
