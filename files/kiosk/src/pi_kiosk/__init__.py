"""pi-fleet kiosk: face-recognition attendance on a Raspberry Pi, on ONNX Runtime."""

__version__ = "0.2.0"
