DELETE FROM roles WHERE name IN ('super_admin', 'admin', 'member');
