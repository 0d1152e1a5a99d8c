"""KEDA external scaler for LLM inference on Kubernetes."""
