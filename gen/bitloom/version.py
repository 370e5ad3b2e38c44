"""The package version, one place for the facade, reports and generated files."""

__version__ = "0.1.0"
