"""rsbuild.testing."""
