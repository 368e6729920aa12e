"""Where the mirror percentage is set: an Istio VirtualService or an Envoy route file."""
