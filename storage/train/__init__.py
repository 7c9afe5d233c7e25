"""Training data on disk: posed footage readers (TUM, COLMAP, nerfstudio, world bundles) and the
sharded sample store ``loci train prepare`` writes and ``loci train run`` reads."""
