"""SMAF: multi-scale attention fusion self-training for WSSS."""

__version__ = "0.1.0"
