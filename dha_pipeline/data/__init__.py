"""Datasets: sources (one module per kind), the verified cache and batch iteration."""
