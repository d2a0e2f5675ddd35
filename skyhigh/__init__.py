"""SkyHigh: speech and retrieval AI behind a durable event API."""

__version__ = "0.1.0"
