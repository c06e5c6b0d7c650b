"""rsbuild.sources.labels."""
