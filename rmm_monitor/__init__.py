"""CAR-T aRMM effectiveness monitor."""

__version__ = "0.1.0"
