-- Types and helpers that later migrations build on. Runs with search_path
-- set to the schema migrate was given (--schema / config `schema`).
CREATE TYPE user_status AS ENUM ('active', 'suspended', 'deleted');

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
