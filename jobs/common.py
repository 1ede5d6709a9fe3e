"""What every entry point shares: the --data default, and turning BeanlibError into one line and exit 2."""

from __future__ import annotations

import os
import sys
from typing import Callable


def default_data() -> str:
    """The data source when --data is not given: $BEANLIB_DATA, else the real TFDS dataset."""
    return os.environ.get("BEANLIB_DATA") or "tfds"


def main_guard(main: Callable[[], int | None]) -> None:
    """Run `main`; a BeanlibError (bad input) becomes one line on stderr and exit status 2."""
    from beanlib.errors import BeanlibError

    try:
        sys.exit(main() or 0)
    except BeanlibError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
