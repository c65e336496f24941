"""xdplb: IPVS with an XDP data path."""
