"""Tools around the experiment: array packs (`calipers pack`) and the device benchmark
(`calipers bench`)."""
