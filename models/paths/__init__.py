"""Camera paths: presets and the trajectory file contract (trajectory), and paths from
waypoints on the ground plane (waypoints)."""
