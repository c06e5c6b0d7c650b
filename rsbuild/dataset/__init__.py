"""rsbuild.dataset."""
