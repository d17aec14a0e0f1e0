"""The edcli version: its own module so every layer can record it without importing the package's public API."""

__version__ = "0.1.0"
