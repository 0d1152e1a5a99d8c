"""The local demo: `python -m scaler demo` (see `scaler.demo.run`)."""
