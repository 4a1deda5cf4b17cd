"""The HTTP edge: rendering Envoy's configuration and running the Envoy binary."""
