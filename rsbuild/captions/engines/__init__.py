"""rsbuild.captions.engines.factory."""
