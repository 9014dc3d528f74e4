"""mnist-basics: fast.ai's chapter 4 (04_mnist_basics) as a reproducible DVC pipeline."""

__version__ = "0.1.0"
