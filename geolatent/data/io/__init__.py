"""Raster IO of the data layer: the streaming COG writer every raster output goes through."""
