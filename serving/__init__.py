"""featurelib scoring service: model registry, REST + gRPC scoring, routing, feature logging,
batch and streaming scoring."""
