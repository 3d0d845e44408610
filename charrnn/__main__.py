"""`python -m charrnn` is the same as the `charrnn` command."""

import sys

try:
    from charrnn.cli import main
except ModuleNotFoundError as exc:  # e.g. the system python, run from a clone, without `make setup`
    print(
        f"charrnn: this Python ({sys.executable}) lacks charrnn's dependencies (no module {exc.name!r}); "
        "run `make setup` and use .venv/bin/charrnn, or `pip install -e .`",
        file=sys.stderr,
    )
    raise SystemExit(1) from None

if __name__ == "__main__":
    main()
