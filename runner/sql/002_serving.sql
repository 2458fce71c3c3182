-- The serving contract (DESIGN.md): tables the export replaces atomically, and the views apps read.
CREATE TABLE IF NOT EXISTS `{{ db }}`.user_labels (
    user_id            BIGINT        NOT NULL PRIMARY KEY,
    user_label         VARCHAR(8)    NOT NULL,
    avg_amount         DECIMAL(16,4) NOT NULL,
    order_count        INT           NOT NULL,
    total_amount       DECIMAL(16,2) NOT NULL,
    overall_avg_amount DECIMAL(16,4) NOT NULL,
    as_of_date         DATE          NOT NULL,
    exported_at        DATETIME      NOT NULL
);

CREATE TABLE IF NOT EXISTS `{{ db }}`.hot_items (
    item_label      VARCHAR(8)    NOT NULL,
    `rank`          INT           NOT NULL,
    item_id         BIGINT        NOT NULL,
    units_sold      BIGINT        NOT NULL,
    item_name       VARCHAR(200)  NOT NULL,
    item_price      DECIMAL(10,2) NOT NULL,
    item_type       VARCHAR(50)   NOT NULL,
    price_threshold DECIMAL(16,4) NOT NULL,
    window_start    DATE          NOT NULL,
    window_end      DATE          NOT NULL,
    as_of_date      DATE          NOT NULL,
    exported_at     DATETIME      NOT NULL,
    PRIMARY KEY (item_label, `rank`)
);

CREATE TABLE IF NOT EXISTS `{{ db }}`.monthly_bills (
    user_id      BIGINT        NOT NULL,
    month        CHAR(7)       NOT NULL,
    order_count  INT           NOT NULL,
    units        INT           NOT NULL,
    total_amount DECIMAL(16,2) NOT NULL,
    as_of_date   DATE          NOT NULL,
    exported_at  DATETIME      NOT NULL,
    PRIMARY KEY (user_id, month)
);

CREATE TABLE IF NOT EXISTS `{{ db }}`.monthly_spending (
    month              CHAR(7)       NOT NULL PRIMARY KEY,
    total_amount       DECIMAL(18,2) NOT NULL,
    order_count        INT           NOT NULL,
    buyer_count        INT           NOT NULL,
    avg_bill_per_buyer DECIMAL(16,2) NOT NULL,
    as_of_date         DATE          NOT NULL,
    exported_at        DATETIME      NOT NULL
);

-- A user with no label yet gets the low tier; label_source says which case applies.
CREATE OR REPLACE VIEW `{{ db }}`.recommendations AS
SELECT u.id                                   AS user_id,
       COALESCE(l.user_label, 'low')          AS user_label,
       CASE WHEN l.user_id IS NULL THEN 'default' ELSE 'labelled' END AS label_source,
       h.`rank`                               AS `rank`,
       h.item_id, h.item_name, h.item_price, h.item_type, h.units_sold, h.as_of_date
FROM `{{ db }}`.users u
LEFT JOIN `{{ db }}`.user_labels l ON l.user_id = u.id
JOIN `{{ db }}`.hot_items h ON h.item_label = COALESCE(l.user_label, 'low');

-- A user's orders with the live express status from the logistics database.
CREATE OR REPLACE VIEW `{{ db }}`.order_tracking AS
SELECT o.user_id, o.id AS order_id, o.created_at AS ordered_at,
       o.item_id, i.name AS item_name, i.item_type, o.item_count, o.amount,
       COALESCE(e.status, 'created') AS express_status,
       e.carrier, e.tracking_no, e.shipped_at, e.delivered_at, e.updated_at AS express_updated_at
FROM `{{ db }}`.orders o
LEFT JOIN `{{ express_db }}`.express e ON e.order_id = o.id
LEFT JOIN `{{ db }}`.items i ON i.id = o.item_id;

-- Today is CURRENT_DATE of the session: the runner sets the session time zone to the business zone.
CREATE OR REPLACE VIEW `{{ db }}`.today_sales AS
SELECT CURRENT_DATE                AS business_date,
       COALESCE(SUM(o.amount), 0)  AS total_amount,
       COUNT(*)                    AS order_count,
       COUNT(DISTINCT o.user_id)   AS customer_count
FROM `{{ db }}`.orders o
WHERE o.created_at >= CURRENT_DATE AND o.created_at < CURRENT_DATE + INTERVAL 1 DAY;

CREATE OR REPLACE VIEW `{{ db }}`.today_sales_by_type AS
SELECT i.item_type,
       SUM(o.amount)             AS total_amount,
       COUNT(*)                  AS order_count,
       COUNT(DISTINCT o.user_id) AS customer_count
FROM `{{ db }}`.orders o
JOIN `{{ db }}`.items i ON i.id = o.item_id
WHERE o.created_at >= CURRENT_DATE AND o.created_at < CURRENT_DATE + INTERVAL 1 DAY
GROUP BY i.item_type;

-- The trend through the day: the same figures per hour, and running totals.
CREATE OR REPLACE VIEW `{{ db }}`.today_sales_by_hour AS
SELECT h.hour_of_day, h.total_amount, h.order_count, h.customer_count,
       SUM(h.total_amount) OVER (ORDER BY h.hour_of_day) AS running_amount,
       SUM(h.order_count) OVER (ORDER BY h.hour_of_day)  AS running_orders
FROM (
    SELECT HOUR(o.created_at) AS hour_of_day,
           SUM(o.amount) AS total_amount, COUNT(*) AS order_count, COUNT(DISTINCT o.user_id) AS customer_count
    FROM `{{ db }}`.orders o
    WHERE o.created_at >= CURRENT_DATE AND o.created_at < CURRENT_DATE + INTERVAL 1 DAY
    GROUP BY HOUR(o.created_at)
) h;
