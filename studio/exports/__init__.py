"""Lifting a world bundle to splats and a mesh, and exporting it to every format (lift), to
training datasets (datasets) and to physics engines (physics)."""
