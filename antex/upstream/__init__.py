"""Everything between Antex and its upstreams: which one answers (pool), how a request moves on
when one fails (failover), what crosses the boundary (headers), the keep-alive connections
(client, response, wire) and the proxies to reach them (proxy); `antex upstreams` (status)."""
