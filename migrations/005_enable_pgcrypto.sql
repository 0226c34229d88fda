-- crypt() and gen_salt() for password hashes, used by the bootstrap script.
CREATE EXTENSION IF NOT EXISTS pgcrypto;
