"""featurelib's online (Redis) layer."""
