-- ecom-htap: the TiDB accounts of the pipeline and of the apps, with the privileges each one uses.
-- For TiDB Cloud Starter (and Essential) and Dedicated; the statements are MySQL-compatible and also run on
-- MySQL 8 / MariaDB (the local stand-in), where the comments say so.
--
-- Run as an administrator (TiDB Cloud: the cluster's root user, in the SQL editor or with a MySQL client over
-- TLS), in two parts:
--   Part 1 now; then, as ecom_pipeline, `ecom init` (it creates both databases, the tables and the views);
--   Part 2 afterwards: its table-level grants need the tables and views to exist.
-- Change before running:
--   * the two passwords (placeholders below): long random ones, kept in your secret store
--     (the runner reads TIDB_PASSWORD; the apps their own setting);
--   * the database names, if you set TIDB_DATABASE / TIDB_EXPRESS_DATABASE (default `ecommerce`,
--     `ecommerce_express`);
--   * on TiDB Cloud Starter/Essential, the user names: there every SQL user name carries the cluster's prefix,
--     `<prefix>.<name>`, e.g. '3pTAoNNegb47Uc8.ecom_pipeline' (the prefix is in the console's Connect dialog, or
--     in SELECT CURRENT_USER() as the root user: '3pTAoNNegb47Uc8.root'@'%'). A user name is at most 32
--     characters, prefix included. For example:
--       sed "s/'ecom_pipeline'/'3pTAoNNegb47Uc8.ecom_pipeline'/g; s/'ecom_app'/'3pTAoNNegb47Uc8.ecom_app'/g" \
--         docs/tidb-setup.sql > /tmp/tidb-setup.sql
--     and set TIDB_USER=3pTAoNNegb47Uc8.ecom_pipeline for the runner. Dedicated clusters have no prefix.
--
-- TiDB Cloud Starter's limits that shape the pipeline (docs.pingcap.com, "Limitations and Quotas of TiDB Cloud
-- Starter and Essential"; README.md):
--   * TLS only, on the public endpoint: the runner verifies the server with TIDB_SSL_CA, or for a
--     *.tidbcloud.com host without it, with the system's CA bundle. REQUIRE SSL below refuses this account in
--     plain text anywhere else too (Dedicated, self-hosted).
--   * Idle connections on the public endpoint are cut after about 340 s, and any connection may be cut after
--     30 minutes (maintenance): the runner keeps no lock on one connection (its run leases are rows in
--     `ecommerce`.run_leases, renewed from fresh connections) and retries steps after a dropped connection.
--   * A transaction cannot last longer than 30 minutes: each archive run reads TiDB in one snapshot transaction,
--     which is why an archive goes in runs of whole days of up to 1M orders; keep them small enough to finish
--     in that time. Transactions also have a size limit (smaller once the free quota is used up).
--   * The free quota (row storage, Request Units) throttles the cluster, then refuses new connections.
-- Host '%': any address. Narrow it where you can (Dedicated: the cluster's IP access list; Starter: the public
-- endpoint's firewall rules, or a private endpoint).

-- ---------------------------------------------------------------------------------------------------------------
-- Part 1: ecom_pipeline, the runner's account (TIDB_USER). It owns the schema: `ecom init` creates it, and the
-- steps write it. Run before `ecom init`: database-level grants do not need the databases to exist.
-- ---------------------------------------------------------------------------------------------------------------
CREATE USER IF NOT EXISTS 'ecom_pipeline'@'%'
  IDENTIFIED BY 'REPLACE-with-a-long-random-password-for-the-pipeline'
  REQUIRE SSL;

-- The business database, its serving tables and views, and the runner's own tables (schema_migrations,
-- pipeline_runs, dataset_info, archive_purges, run_leases):
--   SELECT               every read: the archive's snapshot reads, verify, export's CREATE TABLE ... LIKE (SELECT
--                        on the source table), the views' definer (the views read orders, users, items);
--   INSERT               generate, stream, the run log, leases, and LOAD DATA LOCAL INFILE (the bulk loads of
--                        generate and export: INSERT on the table is all TiDB asks for a LOCAL load; no FILE
--                        privilege, which is for files on the server); RENAME TABLE's target;
--   UPDATE, DELETE       stream (shipments move on), leases, the cold purge (DELETE of proven orders);
--   CREATE               CREATE DATABASE IF NOT EXISTS `ecommerce` (ecom init), CREATE TABLE (migrations, and
--                        export's `<table>__new` and generate's `<table>__gen` tables, made LIKE the live ones), RENAME TABLE's target;
--   DROP                 DROP TABLE (export's `__old`/`__new`, generate's `__gen`/`__old` tables), RENAME TABLE's
--                        source, and the DROP half of CREATE OR REPLACE VIEW;
--   ALTER                ALTER TABLE (migrations: columns, indexes; ALTER TABLE ... SET TIFLASH REPLICA 1 where the
--                        cluster has TiFlash (TIDB_TIFLASH); generate drops and re-adds secondary indexes on its `__gen` tables),
--                        RENAME TABLE's source (export swaps every serving table, generate every business table, in one RENAME TABLE);
--   INDEX                CREATE INDEX / DROP INDEX statements (the migrations add and drop indexes with ALTER
--                        TABLE today, which ALTER covers; this keeps either form open to a migration);
--   CREATE VIEW          CREATE OR REPLACE VIEW recommendations, order_tracking, today_sales* (migrations);
--   SHOW VIEW            SHOW CREATE VIEW: backups and dumps taken as this account (Dumpling, mysqldump) and
--                        inspection; the runner's own steps do not need it.
-- information_schema needs no grant: it shows each account the objects it holds privileges on, which is all
-- the runner reads there (tables, statistics).
-- Views run with their definer's privileges (SQL SECURITY DEFINER): run `ecom init` as ecom_pipeline, so that it
-- is their definer. In TiDB, replacing a view that another user defined also needs SUPER: if an admin created
-- the schema, drop the views (ecom init creates them again) rather than grant SUPER.
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE VIEW, SHOW VIEW
  ON `ecommerce`.* TO 'ecom_pipeline'@'%';

-- The logistics database (express, keyed by order id): the same, as the runner creates, loads, truncates and
-- re-indexes `express` there, and the views of `ecommerce` read it (order_tracking: their definer needs SELECT).
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE VIEW, SHOW VIEW
  ON `ecommerce_express`.* TO 'ecom_pipeline'@'%';

-- ---------------------------------------------------------------------------------------------------------------
-- Part 2: ecom_app, the apps' read-only account for the serving views and tables. Run after `ecom init`: a
-- table-level grant needs its table or view to exist. Table privileges are kept by name, so they hold for the
-- tables that each `ecom export` swaps in under the same names (RENAME TABLE of `<table>__new`).
-- The views run as their definer (ecom_pipeline), so ecom_app reads them without any grant on orders, users,
-- items or express. Apps should set the session time zone to the business zone (ECOM_TIMEZONE) first: the
-- today_* views use CURRENT_DATE.
-- ---------------------------------------------------------------------------------------------------------------
CREATE USER IF NOT EXISTS 'ecom_app'@'%'
  IDENTIFIED BY 'REPLACE-with-a-long-random-password-for-the-apps'
  REQUIRE SSL;

GRANT SELECT ON `ecommerce`.`recommendations` TO 'ecom_app'@'%';
GRANT SELECT ON `ecommerce`.`order_tracking` TO 'ecom_app'@'%';
GRANT SELECT ON `ecommerce`.`today_sales` TO 'ecom_app'@'%';
GRANT SELECT ON `ecommerce`.`today_sales_by_type` TO 'ecom_app'@'%';
GRANT SELECT ON `ecommerce`.`today_sales_by_hour` TO 'ecom_app'@'%';
GRANT SELECT ON `ecommerce`.`user_labels` TO 'ecom_app'@'%';
GRANT SELECT ON `ecommerce`.`hot_items` TO 'ecom_app'@'%';
GRANT SELECT ON `ecommerce`.`monthly_bills` TO 'ecom_app'@'%';
GRANT SELECT ON `ecommerce`.`monthly_spending` TO 'ecom_app'@'%';
-- The CLI's `ecom recommend|orders|bill USER_ID` also check that the user exists in `users` (names, e-mails:
-- personal data). To run those commands as ecom_app, add (TiDB has no column-level privileges):
--   GRANT SELECT ON `ecommerce`.`users` TO 'ecom_app'@'%';

SHOW GRANTS FOR 'ecom_pipeline'@'%';
SHOW GRANTS FOR 'ecom_app'@'%';

-- ---------------------------------------------------------------------------------------------------------------
-- Part 3: TiFlash replicas. `ecom init` asks for them (ALTER TABLE ... SET TIFLASH REPLICA 1 on orders and
-- items, with the ALTER privilege granted above) as TIDB_TIFLASH says: auto (default) asks and, where the
-- cluster has no TiFlash, prints one warning line and goes on (analysis reads TiKV); on makes that an error;
-- off never asks. No store-status table is read (TiDB Cloud Starter/Essential do not support
-- information_schema.tikv_store_status). `ecom status` shows the replicas' progress
-- (information_schema.tiflash_replica).
-- ---------------------------------------------------------------------------------------------------------------

-- ---------------------------------------------------------------------------------------------------------------
-- Part 4 (optional): the real-engine contract suite (`make test-real`, tests/real/README.md). Each run creates
-- its own pair of databases, ecom_contract_<hex> and ecom_contract_<hex>_express, runs the whole pipeline in
-- them and drops them at the end; it never touches `ecommerce`. Give it an account of its own, with the
-- pipeline's privileges on databases named so (a database-name pattern: `_` is a wildcard too, hence `\_`),
-- DROP included, so that it can drop them:
--   CREATE USER IF NOT EXISTS 'ecom_contract'@'%'
--     IDENTIFIED BY 'REPLACE-with-a-long-random-password-for-the-contract-suite' REQUIRE SSL;
--   GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE VIEW, SHOW VIEW
--     ON `ecom\_contract\_%`.* TO 'ecom_contract'@'%';
-- and run the suite with TIDB_USER=ecom_contract (with the cluster's prefix on Starter) and its TIDB_PASSWORD.
-- ---------------------------------------------------------------------------------------------------------------
