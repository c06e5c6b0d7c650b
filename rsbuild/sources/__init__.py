"""rsbuild.sources."""
