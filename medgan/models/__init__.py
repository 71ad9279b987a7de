"""Generators and discriminators built from MONAI blocks."""
