-- The version an agent reports when it polls (e.g. 0.1.0); NULL until it has polled once.
ALTER TABLE agents ADD COLUMN version TEXT;
-- The certificate a signing key was imported with (its leaf, from the keystore): subject and
-- last valid instant (Unix milliseconds). NULL for generated keys and keys imported bare.
ALTER TABLE signing_keys ADD COLUMN cert_subject TEXT;
ALTER TABLE signing_keys ADD COLUMN cert_not_after BIGINT;
