ALTER TABLE users ADD COLUMN last_login_at timestamptz;

-- Data change: accounts that never signed in are treated as fresh.
UPDATE users SET last_login_at = created_at WHERE last_login_at IS NULL;

CREATE INDEX users_last_login_at_idx ON users (last_login_at);
