"""Geometry: the camera convention and every frame conversion (cameras), forward-backward warping
between views (warp), depth alignment (align), hole filling (fill) and point clouds (pointcloud)."""
