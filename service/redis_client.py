"""One Redis client from a TIPML_REDIS_URL, for the state the service keeps in Redis beside
the online store (bandit state, rate limits).

Feast owns the connection string's format ("host:port[,db=N,password=...]"), so the URL reads
the same for the online store and for these. Its module costs seconds to import, which only a
Redis-backed process should pay: it is imported on the first call.
"""

import redis

# A stalled Redis must fail a call within the callers' budgets, not hang it.
TIMEOUTS = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}


def redis_client(redis_url: str) -> redis.Redis:
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(redis_url)
    return redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **(TIMEOUTS | params))
