"""Code generated from proto/ by grpcio-tools at build time (make gen); not committed."""
