"""The package version, in a module of its own so that any part can read it
without importing the package (which would tie every part to the top)."""
__version__ = "0.1.0"
