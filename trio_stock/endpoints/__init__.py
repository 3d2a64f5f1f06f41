"""What the gateway serves: the two WebSocket client protocols, the REST API, metrics, page."""
