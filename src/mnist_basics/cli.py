"""What every stage script shares: params, logging, and a clean end on a mistake or a signal."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from mnist_basics import params as params_mod
from mnist_basics.errors import UserError

log = logging.getLogger("mnist_basics")


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_stage(name: str, sections: tuple[str, ...], main: Callable[[dict], None]) -> None:
    """Validate params, run `main(params)`, and turn a user's mistake into one line and exit 2.

    SIGTERM is treated like Ctrl-C, so `finally` blocks and atomic writes clean up either way.
    """
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        p = params_mod.load("params.yaml", sections)
        main(p)
    except UserError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no output was written", file=sys.stderr)
        sys.exit(130)
