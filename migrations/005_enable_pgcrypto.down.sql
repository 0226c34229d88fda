-- Drops pgcrypto only where 005 would have created it, in this schema: an
-- installation elsewhere predates this migration and may serve others.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension
                WHERE extname = 'pgcrypto'
                  AND extnamespace = (SELECT oid FROM pg_namespace
                                       WHERE nspname = current_schema())) THEN
        DROP EXTENSION pgcrypto;
    END IF;
END
$$;
