"""The local sandbox: a real Envoy configured the way istiod configures a sidecar, in front of
loopback backends. Beside the engine, never imported by it: `mirrorramp` keeps only what
production runs."""
