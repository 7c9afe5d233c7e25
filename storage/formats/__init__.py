"""Readers and writers for every file format Loci touches (numpy in, files out): photos and
images, the world bundle, RGB-D evaluation data, PLY clouds, splats (INRIA PLY, .splat, .spz),
meshes (GLB, OBJ, PLY), USD, MJCF, dataset exports (nerfstudio, COLMAP) and video."""
