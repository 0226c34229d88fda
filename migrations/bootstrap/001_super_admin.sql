-- The first super admin. Bootstrap scripts run after every successful
-- `migrate up`, so this one does nothing when the account exists.
--
-- Its values come from the environment variables SUPER_ADMIN_EMAIL and
-- SUPER_ADMIN_PASSWORD (declared as bootstrap_variables in
-- config/db_main.yaml), as session settings: they never appear in this
-- text, in any output or in the journal.

-- pgcrypto may live outside this schema (installed before 005): add its
-- schema to the search path for this transaction.
SELECT set_config('search_path',
                  current_setting('search_path') || ', ' || quote_ident(n.nspname),
                  true)
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'pgcrypto';

-- bcrypt with cost 12; computed only when the account is created.
INSERT INTO users (email, display_name, password_hash)
SELECT current_setting('migrate.super_admin_email'),
       'Super Admin',
       crypt(current_setting('migrate.super_admin_password'), gen_salt('bf', 12))
 WHERE NOT EXISTS (
       SELECT 1 FROM users
        WHERE lower(email) = lower(current_setting('migrate.super_admin_email')));

INSERT INTO user_roles (user_id, role_id)
SELECT u.id, r.id
  FROM users u JOIN roles r ON r.name = 'super_admin'
 WHERE lower(u.email) = lower(current_setting('migrate.super_admin_email'))
ON CONFLICT DO NOTHING;
