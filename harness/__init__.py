"""The embedded closed loop: a broker, a model repository, serving replicas, the daemon and the
traffic simulator, started as real processes on loopback (the demo, the loop bench, e2e tests)."""
