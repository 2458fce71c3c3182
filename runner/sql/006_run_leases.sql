-- Leases that archive, purge, generate's archive reset and export take turns on (runner/lease.py).
-- A lease is a row with an expiry that its holder renews while it runs, from fresh connections, and
-- re-checks (renewing it) right before each write it protects: unlike a named lock (GET_LOCK), it does
-- not depend on one connection staying up, which TiDB Cloud cuts when idle (about 340 s on Starter's
-- public endpoint) and after 30 minutes, and GET_LOCK is bounded by TiDB's max-txn-ttl (1 h) anyway.
-- `token` grows by one at each new holder: the fencing token. Times are the server's, in UTC.
CREATE TABLE IF NOT EXISTS `{{ db }}`.run_leases (
    name        VARCHAR(64)  NOT NULL PRIMARY KEY,
    holder      VARCHAR(200) NOT NULL,
    token       BIGINT       NOT NULL,
    doing       VARCHAR(200) NOT NULL,
    acquired_at DATETIME(6)  NOT NULL,
    expires_at  DATETIME(6)  NOT NULL
);
