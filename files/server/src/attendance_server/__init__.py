"""Reference attendance server for pi-fleet kiosks (the API they speak, as running code)."""
__version__ = "0.1.0"
