"""Lifting a world to 3D: pixel-aligned Gaussian splats (splats), their CPU renderer and
refinement (splat_render, splat_refine), TSDF fusion and meshing (tsdf, tsdf_mesh), and physics
preparation: heightfield floor and convex pieces (physics)."""
