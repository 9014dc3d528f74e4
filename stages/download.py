"""Stage download: data/raw.zip, members <dataset>/{train,valid}/<digit>/<index>.png, from the
first source in data.sources that delivers verified MNIST. Imports no torch, so it runs anywhere."""

import _checkout  # noqa: F401  (first: this checkout's library)

from mnist_basics.download import download
from mnist_basics.params import Params
from mnist_basics.stage import run_stage

RAW = "data/raw.zip"


def main(p: Params) -> None:
    download(p.data.digits, p.data.sources, p.data.timeout, RAW)


if __name__ == "__main__":
    run_stage("download", main, outputs=[RAW])
