-- Today's dashboard and the daily archive read orders by time. With every column they read in the
-- index, they read the index alone instead of looking each row up in the table (measured on the
-- stand-in with 67k orders today: today_sales 180 ms -> 30 ms). Its prefix serves whatever the old
-- created_at index did.
ALTER TABLE `{{ db }}`.orders ADD INDEX idx_orders_created_cover (created_at, user_id, item_id, item_count, amount);
ALTER TABLE `{{ db }}`.orders DROP INDEX idx_orders_created_at;
