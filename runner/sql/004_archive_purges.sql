-- Days of orders and expresses deleted from TiDB by the cold purge, once `verify` proved the warehouse
-- holds them exactly. A day is recorded (state 'purging') before its first row is deleted and marked
-- 'purged' after its last, so a purge killed half-way resumes, and no archive can replace the day
-- in the warehouse with the nothing that TiDB now holds.
CREATE TABLE IF NOT EXISTS `{{ db }}`.archive_purges (
    day        DATE        NOT NULL PRIMARY KEY,
    orders     BIGINT      NOT NULL,
    express    BIGINT      NOT NULL,
    amount     DECIMAL(18,2) NOT NULL,
    checksum   CHAR(33)    NOT NULL,
    state      VARCHAR(10) NOT NULL,
    started_at DATETIME    NOT NULL,
    purged_at  DATETIME    NULL
);
