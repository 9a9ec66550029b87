"""Models that turn an image into instances: for now the report's threshold model."""
