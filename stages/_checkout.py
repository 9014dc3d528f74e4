"""Put this checkout's src/ first on sys.path, so a stage runs the library code that dvc.lock
hashes (in a queued experiment's temporary copy too), not whichever copy pip installed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import mnist_basics.stage  # noqa: F401  (first: its clock starts before any dep is read)
