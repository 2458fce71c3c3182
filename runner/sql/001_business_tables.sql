-- The business tables written by the apps (and by loaders.generate / loaders.stream).
-- On TiDB the order and express keys are AUTO_RANDOM, so concurrent inserts spread over regions
-- instead of piling onto one hot region; elsewhere a plain AUTO_INCREMENT does.
CREATE DATABASE IF NOT EXISTS `{{ db }}`;
CREATE DATABASE IF NOT EXISTS `{{ express_db }}`;

CREATE TABLE IF NOT EXISTS `{{ db }}`.users (
    id          BIGINT       NOT NULL PRIMARY KEY,
    name        VARCHAR(100) NOT NULL,
    email       VARCHAR(200) NOT NULL,
    city        VARCHAR(100) NOT NULL,
    created_at  DATETIME     NOT NULL
);

CREATE TABLE IF NOT EXISTS `{{ db }}`.items (
    id          BIGINT        NOT NULL PRIMARY KEY,
    name        VARCHAR(200)  NOT NULL,
    item_type   VARCHAR(50)   NOT NULL,
    price       DECIMAL(10,2) NOT NULL,
    created_at  DATETIME      NOT NULL
);

CREATE TABLE IF NOT EXISTS `{{ db }}`.orders (
    id          BIGINT        NOT NULL {% if tidb %}AUTO_RANDOM{% else %}AUTO_INCREMENT{% endif %} PRIMARY KEY,
    user_id     BIGINT        NOT NULL,
    item_id     BIGINT        NOT NULL,
    item_count  INT           NOT NULL,
    amount      DECIMAL(12,2) NOT NULL,
    created_at  DATETIME      NOT NULL,
    -- today's analysis and the daily archive read by time; a user's order list by user then time
    KEY idx_orders_created_at (created_at),
    KEY idx_orders_user_created (user_id, created_at)
);

CREATE TABLE IF NOT EXISTS `{{ express_db }}`.express (
    id           BIGINT      NOT NULL {% if tidb %}AUTO_RANDOM{% else %}AUTO_INCREMENT{% endif %} PRIMARY KEY,
    order_id     BIGINT      NOT NULL,
    carrier      VARCHAR(40) NOT NULL,
    tracking_no  VARCHAR(40) NOT NULL,
    status       VARCHAR(20) NOT NULL,
    shipped_at   DATETIME    NULL,
    delivered_at DATETIME    NULL,
    updated_at   DATETIME    NOT NULL,
    UNIQUE KEY uk_express_order (order_id),
    KEY idx_express_status (status)
);

-- What generate produced, so the demo can tell reuse from reset.
CREATE TABLE IF NOT EXISTS `{{ db }}`.dataset_info (
    id           INT         NOT NULL PRIMARY KEY,
    seed         BIGINT      NOT NULL,
    users        BIGINT      NOT NULL,
    items        BIGINT      NOT NULL,
    orders       BIGINT      NOT NULL,
    days         INT         NOT NULL,
    first_day    DATE        NOT NULL,
    last_day     DATE        NOT NULL,
    generated_at DATETIME    NOT NULL
);

-- One row per pipeline step run by the runner, for `ecom status`.
CREATE TABLE IF NOT EXISTS `{{ db }}`.pipeline_runs (
    id           BIGINT       NOT NULL {% if tidb %}AUTO_RANDOM{% else %}AUTO_INCREMENT{% endif %} PRIMARY KEY,
    step         VARCHAR(20)  NOT NULL,
    started_at   DATETIME     NOT NULL,
    finished_at  DATETIME     NOT NULL,
    detail       VARCHAR(1000) NOT NULL,
    KEY idx_pipeline_runs_step (step, finished_at)
);
-- TiFlash replicas of the analysis tables are asked for after the migrations (runner/tiflash.py).
