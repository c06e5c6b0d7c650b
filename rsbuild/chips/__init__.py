"""rsbuild.chips."""
