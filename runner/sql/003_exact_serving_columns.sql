-- Serving columns as wide as the marts they are exported from (the export refuses lossy loads),
-- and an index for the stream, which moves the oldest shipments of a status forward.
ALTER TABLE `{{ db }}`.user_labels MODIFY avg_amount DECIMAL(18,6) NOT NULL;
ALTER TABLE `{{ db }}`.user_labels MODIFY total_amount DECIMAL(18,2) NOT NULL;
ALTER TABLE `{{ db }}`.user_labels MODIFY overall_avg_amount DECIMAL(18,6) NOT NULL;
ALTER TABLE `{{ db }}`.hot_items MODIFY price_threshold DECIMAL(18,6) NOT NULL;
ALTER TABLE `{{ db }}`.monthly_bills MODIFY total_amount DECIMAL(18,2) NOT NULL;
ALTER TABLE `{{ db }}`.monthly_spending MODIFY avg_bill_per_buyer DECIMAL(18,2) NOT NULL;
ALTER TABLE `{{ express_db }}`.express ADD INDEX idx_express_status_updated (status, updated_at);
ALTER TABLE `{{ express_db }}`.express DROP INDEX idx_express_status;
