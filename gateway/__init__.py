"""The request gateway: holds each request in Redis until a pod's worker takes it."""
