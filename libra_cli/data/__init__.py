"""Datasets: COCO / LVIS loaders, the synthetic benchmark generator and transforms."""
