"""Detector parts: the Balanced Feature Pyramid neck, RoI heads and the detector builder."""
