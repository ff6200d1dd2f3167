"""calipers: measure your networks with error bars."""

__version__ = "0.1.0"
