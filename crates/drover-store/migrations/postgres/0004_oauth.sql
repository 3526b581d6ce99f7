-- OAuth 2.0: client registrations, token-signing keys (private keys encrypted at rest), and
-- revoked token ids (kept until the token would have expired).
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    previous_secret_hash TEXT,
    previous_valid_until BIGINT,
    roles TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    tokens_not_before BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    secret_rotated_at BIGINT
);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    private_key TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    active BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
