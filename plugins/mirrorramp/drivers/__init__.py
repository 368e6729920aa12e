"""Where the mirror percentage is set: an Istio VirtualService or an nginx host."""
