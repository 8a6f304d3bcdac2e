"""lrctl: learned learning-rate control for PyTorch."""

__version__ = "0.1.0"
