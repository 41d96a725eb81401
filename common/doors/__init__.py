"""Doors: one package per platform, converting its requests into our types and our results into its replies."""
