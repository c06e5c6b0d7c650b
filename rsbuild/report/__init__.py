"""rsbuild.report."""
