"""The package version, in a leaf module so code inside the package never imports the package face for it."""

__version__ = "0.1.0"
