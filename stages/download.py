"""Stage download: data/raw.zip, members <dataset>/{train,valid}/<digit>/<index>.png, from the
first source in data.sources that delivers verified MNIST. Imports no torch, so it runs anywhere."""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's library)

from mnist_basics.cli import run_stage
from mnist_basics.download import download


def main(params: dict) -> None:
    """Read params["data"] and write data/raw.zip."""
    data = params["data"]
    download(data["digits"], data["sources"], data["timeout"], "data/raw.zip")


if __name__ == "__main__":
    run_stage("download", ("data",), main)
