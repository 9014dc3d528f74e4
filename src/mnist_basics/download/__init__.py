"""The download stage: MNIST from the first source that delivers verified data."""

from mnist_basics.download.sources import Archive, Urls, download

__all__ = ["Archive", "Urls", "download"]
