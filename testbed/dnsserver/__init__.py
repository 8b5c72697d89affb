"""Lab DNS server (placeholder so the DNS image builds; replaced by the real package)."""
