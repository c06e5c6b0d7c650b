"""rsbuild.run."""
