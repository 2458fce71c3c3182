-- ecom-htap: what the pipeline needs in a Snowflake account, with the least privileges that run it.
--
-- Run it as it is, as a user who may use the roles SYSADMIN and SECURITYADMIN (an ACCOUNTADMIN can):
--   Snowsight: paste into a SQL worksheet, change the SET block below if you want other names, "Run all".
--   snowsql -f docs/snowflake-setup.sql     (or: snow sql -f docs/snowflake-setup.sql)
-- It can run again: every object is created IF NOT EXISTS and every grant is idempotent; running it again
-- with another public key in the SET block replaces the user's key.
--
-- What the pipeline does with it (README.md, runner/warehouse.py, loaders/archive.py, dbt_project/):
--   * the runner (ecom archive / verify / export / status) signs in as the service user below, runs
--     USE SCHEMA <db>.RAW (creating RAW only where it is missing), creates and replaces the RAW tables
--     (ORDERS, EXPRESS, USERS, ITEMS, ARCHIVE_LOG, SNAPSHOT_DIGESTS), loads
--     each run into TRANSIENT tables <TABLE>__STAGE_<runid> with write_pandas (a temporary stage in RAW,
--     Parquet files PUT into it, COPY INTO the stage table), then DELETE/INSERT inside one transaction;
--     it reads the marts of the dbt schema back for the export to TiDB;
--   * dbt (`ecom transform`, in the runner's process, same user and role) runs `dbt source freshness` on RAW,
--     then builds views (staging, intermediate), tables (marts) and an incremental model (its scratch
--     table is a TEMPORARY table) in the dbt schema (SNOWFLAKE_SCHEMA, default ANALYTICS).
-- The role owns everything it creates (the creating role is the owner in Snowflake), so it needs no grant
-- on its own tables and views; the future grants below cover tables someone else creates in its schemas.
--
-- The runner's side: ECOM_TARGET=snowflake, and (profiles.example.yml)
--   SNOWFLAKE_ACCOUNT=<orgname>-<accountname>   SNOWFLAKE_USER=ECOM_PIPELINE_SVC   SNOWFLAKE_ROLE=ECOM_PIPELINE
--   SNOWFLAKE_WAREHOUSE=ECOM_WH   SNOWFLAKE_DATABASE=ECOMMERCE   SNOWFLAKE_SCHEMA=ANALYTICS
--   SNOWFLAKE_PRIVATE_KEY_PATH=/path/to/rsa_key.p8   SNOWFLAKE_PRIVATE_KEY_PASSPHRASE=<the key's passphrase>
--
-- The key pair (before running this script; keep rsa_key.p8 and its passphrase in your secret store):
--   openssl genrsa 2048 | openssl pkcs8 -topk8 -v2 aes256 -inform PEM -out rsa_key.p8   # asks for a passphrase
--   openssl rsa -in rsa_key.p8 -pubout -out rsa_key.pub                                  # the public half
--   grep -v -- '-----' rsa_key.pub | tr -d '\n'          # one line: paste it as pipeline_public_key below
-- After the script, check that Snowflake holds that key (the last statements print RSA_PUBLIC_KEY_FP):
--   openssl rsa -pubin -in rsa_key.pub -outform DER | openssl dgst -sha256 -binary | openssl enc -base64
--   must print the same text as RSA_PUBLIC_KEY_FP after its "SHA256:" prefix.
-- Rotation: ALTER USER ECOM_PIPELINE_SVC SET RSA_PUBLIC_KEY_2 = '<new key>'; switch the runner to the new
-- private key; then ALTER USER ECOM_PIPELINE_SVC UNSET RSA_PUBLIC_KEY.

-- ---------------------------------------------------------------------------------------------------------------
-- Names (change them here only). Unquoted names: Snowflake stores them in upper case.
-- ---------------------------------------------------------------------------------------------------------------
SET pipeline_role = 'ECOM_PIPELINE';
SET pipeline_warehouse = 'ECOM_WH';
SET pipeline_database = 'ECOMMERCE';
SET raw_schema = $pipeline_database || '.RAW';              -- fixed name: the runner and dbt's source read RAW
SET analytics_schema = $pipeline_database || '.ANALYTICS';  -- dbt's schema: SNOWFLAKE_SCHEMA
SET pipeline_user = 'ECOM_PIPELINE_SVC';
-- The public key, one line without the BEGIN/END lines (see above). Snowflake refuses this placeholder at the
-- ALTER USER that sets the key (Part 4): everything before it is then in place; run it again with the key.
SET pipeline_public_key = 'PASTE_THE_PUBLIC_KEY_OF_rsa_key.pub_HERE';

-- ---------------------------------------------------------------------------------------------------------------
-- Part 1: the role. SECURITYADMIN creates roles and users and holds MANAGE GRANTS (needed for future grants).
-- ---------------------------------------------------------------------------------------------------------------
USE ROLE SECURITYADMIN;

CREATE ROLE IF NOT EXISTS IDENTIFIER($pipeline_role)
  COMMENT = 'ecom-htap pipeline: the runner (archive, verify, export) and dbt';
-- Role hierarchy: SYSADMIN (and so ACCOUNTADMIN) inherits what the pipeline owns and can manage or drop it.
GRANT ROLE IDENTIFIER($pipeline_role) TO ROLE SYSADMIN;

-- ---------------------------------------------------------------------------------------------------------------
-- Part 2: warehouse, database and schemas, owned by SYSADMIN (the pipeline gets privileges on them, not ownership:
-- it cannot drop them, resize the warehouse or grant anything on them).
-- ---------------------------------------------------------------------------------------------------------------
USE ROLE SYSADMIN;

-- XSMALL is plenty for the archive's COPYs and the dbt models (README: 300k orders in seconds). It resumes on
-- the first query and suspends after 60 s idle, so it bills only while the pipeline runs. The statement timeout
-- is a backstop a little above the runner's own (ECOM_STATEMENT_TIMEOUT_SECONDS, default 4 h = 14400 s, set on
-- every runner session): Snowflake applies the lower of the session's and the warehouse's values, so the
-- runner's limit fires first with its own message, and this one bounds the sessions that set none (dbt's,
-- ad-hoc ones). Snowflake's default would be 2 days.
CREATE WAREHOUSE IF NOT EXISTS IDENTIFIER($pipeline_warehouse)
  WAREHOUSE_SIZE = XSMALL
  AUTO_SUSPEND = 60
  AUTO_RESUME = TRUE
  INITIALLY_SUSPENDED = TRUE
  STATEMENT_TIMEOUT_IN_SECONDS = 16200
  COMMENT = 'ecom-htap pipeline: archive loads and dbt builds';

CREATE DATABASE IF NOT EXISTS IDENTIFIER($pipeline_database)
  COMMENT = 'ecom-htap: the archive of TiDB (RAW) and the dbt models (ANALYTICS)';
CREATE SCHEMA IF NOT EXISTS IDENTIFIER($raw_schema)
  COMMENT = 'Whole days of orders and expresses, users/items snapshots, archive log: written by ecom archive';
CREATE SCHEMA IF NOT EXISTS IDENTIFIER($analytics_schema)
  COMMENT = 'dbt: staging and intermediate views, marts, read back by ecom export';

-- ---------------------------------------------------------------------------------------------------------------
-- Part 3: the grants. SECURITYADMIN's MANAGE GRANTS covers grants on objects SYSADMIN owns, and is required for
-- the future grants.
-- ---------------------------------------------------------------------------------------------------------------
USE ROLE SECURITYADMIN;

-- Run queries on the warehouse (and resume it: AUTO_RESUME needs nothing more than USAGE). No OPERATE, MODIFY or
-- MONITOR: the pipeline never starts, resizes or inspects it.
GRANT USAGE ON WAREHOUSE IDENTIFIER($pipeline_warehouse) TO ROLE IDENTIFIER($pipeline_role);

-- See the database and resolve names in it (USE SCHEMA, information_schema reads, dbt's SHOW ... IN DATABASE).
GRANT USAGE ON DATABASE IDENTIFIER($pipeline_database) TO ROLE IDENTIFIER($pipeline_role);
-- Both schemas are made above, so the role needs no CREATE SCHEMA: the runner creates RAW only where it is
-- missing (Snowflake checks CREATE SCHEMA on the database even for CREATE SCHEMA IF NOT EXISTS), and dbt
-- creates its schema only when SNOWFLAKE_SCHEMA names one that does not exist. To let it (a schema it
-- creates, it owns), grant:
--   GRANT CREATE SCHEMA ON DATABASE IDENTIFIER($pipeline_database) TO ROLE IDENTIFIER($pipeline_role);

-- RAW, written by the runner:
--   USAGE               USE SCHEMA RAW, and every name in it;
--   CREATE TABLE        the RAW tables, the TRANSIENT stage tables <TABLE>__STAGE_<runid> (CREATE OR REPLACE);
--   CREATE STAGE        write_pandas's temporary stage (CREATE TEMPORARY STAGE in RAW; PUT and COPY need
--                       nothing more, as the session owns that stage);
--   CREATE FILE FORMAT  write_pandas's temporary file format (the connector creates one when it infers a schema
--                       or creates the table; the runner writes into tables it created, but the grant keeps a
--                       connector upgrade that always creates one from failing the archive).
GRANT USAGE, CREATE TABLE, CREATE STAGE, CREATE FILE FORMAT
  ON SCHEMA IDENTIFIER($raw_schema) TO ROLE IDENTIFIER($pipeline_role);

-- ANALYTICS, written by dbt:
--   USAGE               resolve names; dbt's SHOW TERSE OBJECTS / DESCRIBE;
--   CREATE VIEW         staging and intermediate models (views, CREATE OR REPLACE VIEW);
--   CREATE TABLE        marts (transient tables), and the TEMPORARY scratch table of the incremental model.
GRANT USAGE, CREATE TABLE, CREATE VIEW
  ON SCHEMA IDENTIFIER($analytics_schema) TO ROLE IDENTIFIER($pipeline_role);

-- Tables and views that another role creates in these schemas (an admin restoring a table with UNDROP or a
-- clone, or creating a RAW table ahead of the pipeline): the pipeline can still read and write them. A table
-- that dbt replaces (CREATE OR REPLACE) must be owned by the pipeline's role, though: after such a restore,
--   GRANT OWNERSHIP ON ALL TABLES IN SCHEMA ECOMMERCE.ANALYTICS TO ROLE ECOM_PIPELINE COPY CURRENT GRANTS;
-- Schema-level future grants take precedence over database-level ones for these schemas.
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
  ON FUTURE TABLES IN SCHEMA IDENTIFIER($raw_schema) TO ROLE IDENTIFIER($pipeline_role);
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
  ON FUTURE TABLES IN SCHEMA IDENTIFIER($analytics_schema) TO ROLE IDENTIFIER($pipeline_role);
GRANT SELECT ON FUTURE VIEWS IN SCHEMA IDENTIFIER($analytics_schema) TO ROLE IDENTIFIER($pipeline_role);

-- ---------------------------------------------------------------------------------------------------------------
-- Part 4: the service user. TYPE = SERVICE: no password, no SAML, no MFA; it signs in with its key pair (or a
-- programmatic access token, part 5). Defaults: the role and warehouse above (the runner and dbt also name them
-- from SNOWFLAKE_ROLE / SNOWFLAKE_WAREHOUSE).
-- ---------------------------------------------------------------------------------------------------------------
CREATE USER IF NOT EXISTS IDENTIFIER($pipeline_user)
  TYPE = SERVICE
  DEFAULT_ROLE = $pipeline_role
  DEFAULT_WAREHOUSE = $pipeline_warehouse
  COMMENT = 'ecom-htap pipeline (runner + dbt): key-pair sign-in';
GRANT ROLE IDENTIFIER($pipeline_role) TO USER IDENTIFIER($pipeline_user);
-- The public half of the key pair (a separate statement so that a new key in the SET block replaces the old one).
ALTER USER IDENTIFIER($pipeline_user) SET RSA_PUBLIC_KEY = $pipeline_public_key;

-- The check, in the same worksheet or session (the SET variables above must be set): TYPE is SERVICE,
-- DEFAULT_ROLE and DEFAULT_WAREHOUSE as above, and RSA_PUBLIC_KEY_FP is 'SHA256:' followed by what the openssl
-- fingerprint command at the top prints. (Left as a comment: sqlglot, which checks this file's syntax in the
-- repository, cannot parse DESC USER; Snowflake runs it as it is.)
--   DESC USER IDENTIFIER($pipeline_user);
--   SELECT "property", "value" FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))
--     WHERE "property" IN ('TYPE', 'DEFAULT_ROLE', 'DEFAULT_WAREHOUSE', 'RSA_PUBLIC_KEY_FP');
-- And what the role holds now, and will hold on the tables created in RAW from now on:
SHOW GRANTS TO ROLE IDENTIFIER($pipeline_role);
SHOW FUTURE GRANTS IN SCHEMA IDENTIFIER($raw_schema);

-- ---------------------------------------------------------------------------------------------------------------
-- Part 5 (optional): a programmatic access token (PAT) instead of the key pair
--   (runner: SNOWFLAKE_AUTHENTICATOR=programmatic_access_token, SNOWFLAKE_TOKEN=<the token secret>).
-- By default Snowflake lets a SERVICE user create or use a PAT only while a network policy applies to the user;
-- the policy lists the addresses the pipeline runs from. (An authentication policy with
-- PAT_POLICY = (NETWORK_POLICY_EVALUATION = ENFORCED_NOT_REQUIRED) lifts that requirement; not recommended.)
-- For a service user ROLE_RESTRICTION is required: the token signs in with that role only. The token secret is
-- shown once, in the result of the ALTER USER ... ADD statement: store it in your secret manager at once.
-- Network rules are schema objects: put them in a schema your security admins own (here ECOMMERCE.RAW would
-- mix them with the archive; use e.g. a SECURITY database).
-- ---------------------------------------------------------------------------------------------------------------
-- USE ROLE SECURITYADMIN;
-- CREATE NETWORK RULE IF NOT EXISTS SECURITY.NETWORK.ECOM_PIPELINE_RUNNERS
--   MODE = INGRESS TYPE = IPV4 VALUE_LIST = ('203.0.113.0/24')    -- the pipeline's egress addresses
--   COMMENT = 'Where the ecom-htap pipeline connects from';
-- CREATE NETWORK POLICY IF NOT EXISTS ECOM_PIPELINE_POLICY
--   ALLOWED_NETWORK_RULE_LIST = ('SECURITY.NETWORK.ECOM_PIPELINE_RUNNERS')
--   COMMENT = 'ecom-htap pipeline: required for its programmatic access token';
-- ALTER USER ECOM_PIPELINE_SVC SET NETWORK_POLICY = ECOM_PIPELINE_POLICY;
-- ALTER USER ECOM_PIPELINE_SVC ADD PROGRAMMATIC ACCESS TOKEN ECOM_PIPELINE_PAT
--   ROLE_RESTRICTION = 'ECOM_PIPELINE'
--   DAYS_TO_EXPIRY = 90
--   COMMENT = 'ecom-htap runner; rotate with ALTER USER ... ROTATE PROGRAMMATIC ACCESS TOKEN';
-- SHOW USER PROGRAMMATIC ACCESS TOKENS FOR USER ECOM_PIPELINE_SVC;

-- ---------------------------------------------------------------------------------------------------------------
-- Part 6 (optional): what the real-engine contract suite (`make test-real`, tests/real/README.md) needs besides.
-- Each run creates a database of its own, ECOM_CONTRACT_<hex> (TRANSIENT, DATA_RETENTION_TIME_IN_DAYS = 0),
-- runs the whole pipeline in it (its RAW and dbt schemas) and drops it at the end; it never touches ECOMMERCE.
-- Its database must be its own because the runner's RAW schema has a fixed name: a schema of its own inside
-- ECOMMERCE could not keep its archive apart from the production one. So its role needs CREATE DATABASE on the
-- account: give that to a role of its own, for a user of its own, never to ECOM_PIPELINE. The role owns the
-- databases it creates (all privileges in them, and DROP); SYSADMIN inherits them, to drop what an
-- interrupted run left (SHOW DATABASES LIKE 'ECOM_CONTRACT_%').
-- Run the suite with SNOWFLAKE_USER=ECOM_CONTRACT_SVC SNOWFLAKE_ROLE=ECOM_CONTRACT SNOWFLAKE_WAREHOUSE=ECOM_WH
-- and that user's key (SNOWFLAKE_PRIVATE_KEY_PATH ...); ECOM_TARGET=snowflake; SNOWFLAKE_DATABASE is set by the
-- suite for each run. It shares ECOM_WH (USAGE) and its statement timeout.
-- ---------------------------------------------------------------------------------------------------------------
-- USE ROLE SECURITYADMIN;
-- CREATE ROLE IF NOT EXISTS ECOM_CONTRACT COMMENT = 'ecom-htap real-engine contract suite: throwaway databases';
-- GRANT ROLE ECOM_CONTRACT TO ROLE SYSADMIN;
-- GRANT CREATE DATABASE ON ACCOUNT TO ROLE ECOM_CONTRACT;
-- GRANT USAGE ON WAREHOUSE ECOM_WH TO ROLE ECOM_CONTRACT;
-- CREATE USER IF NOT EXISTS ECOM_CONTRACT_SVC
--   TYPE = SERVICE DEFAULT_ROLE = ECOM_CONTRACT DEFAULT_WAREHOUSE = ECOM_WH
--   COMMENT = 'ecom-htap real-engine contract suite (make test-real)';
-- GRANT ROLE ECOM_CONTRACT TO USER ECOM_CONTRACT_SVC;
-- ALTER USER ECOM_CONTRACT_SVC SET RSA_PUBLIC_KEY = '<the public key of a key pair of its own>';
