"""The package's version, the single source hatchling reads at build time."""

__version__ = "0.2.0"
