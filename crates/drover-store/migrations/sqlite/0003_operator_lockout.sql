-- Operators: e-mail, and lockout after repeated failed logins.
ALTER TABLE operators ADD COLUMN email TEXT;
ALTER TABLE operators ADD COLUMN failed_logins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE operators ADD COLUMN locked_until BIGINT;
