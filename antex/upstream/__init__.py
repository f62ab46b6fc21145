"""The upstream pool: which upstream answers (pool), how a request fails over (failover), what
crosses the boundary (headers), and the connections themselves."""
