"""Data layer: chains, readers for every supported format, datasets and batching."""
