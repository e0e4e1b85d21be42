"""Build-time helpers of the documentation site (not part of the openocr_cli package)."""
