-- Small versioned records of the identity layer (see Store::record_*): authorization codes,
-- refresh tokens and their families, device codes, replay caches, custom roles, access groups,
-- authentication profiles.
CREATE TABLE records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    version BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (kind, key)
);
CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
-- Client registrations: redirect URIs, public-client flag, private_key_jwt keys, bound agent.
ALTER TABLE clients ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
