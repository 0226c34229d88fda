DROP FUNCTION set_updated_at();
DROP TYPE user_status;
