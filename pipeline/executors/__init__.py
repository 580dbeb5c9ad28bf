"""Where backend calls run: in this process (local threads) or on a cluster (Ray, extra `ray`)."""
