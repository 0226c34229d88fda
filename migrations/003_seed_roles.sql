-- Data change: the roles every deployment starts with.
INSERT INTO roles (name, description) VALUES
    ('super_admin', 'Full access, including user and role management'),
    ('admin',       'Manages users'),
    ('member',      'An ordinary signed-in user')
ON CONFLICT (name) DO NOTHING;
