-- The access part's tables (access/): who may do what, their signatures, and the one audit log every change to a
-- record appends to. Nothing here is updated or deleted by the product: a change is a new row, and each row is
-- covered by an audit entry whose hash `rmm audit verify` recomputes.

-- A user's identity (immutable); role, name and whether they are disabled are in user_history (latest row wins).
CREATE TABLE IF NOT EXISTS users (
    user_id VARCHAR PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL, created_by VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS user_history (
    user_id VARCHAR NOT NULL, seq BIGINT NOT NULL, action VARCHAR NOT NULL, full_name VARCHAR NOT NULL,
    role VARCHAR NOT NULL, disabled BOOLEAN NOT NULL, actor VARCHAR NOT NULL, changed_at TIMESTAMPTZ NOT NULL,
    reason VARCHAR NOT NULL, PRIMARY KEY (user_id, seq)
);
-- A user's credential: the password's scrypt hash, and the Ed25519 key pair that signs for them (the private key
-- encrypted with a key derived from the password, so a signature needs the password). A reset adds a key; the
-- latest is the current one; older public keys stay to verify older signatures.
CREATE TABLE IF NOT EXISTS user_keys (
    key_id VARCHAR PRIMARY KEY, user_id VARCHAR NOT NULL, password_hash VARCHAR NOT NULL,
    public_key VARCHAR NOT NULL, private_key_enc VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL
);
-- API tokens: only their sha256 is kept; the token itself is shown once.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_hash VARCHAR PRIMARY KEY, user_id VARCHAR NOT NULL, issued_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS token_revocations (
    token_hash VARCHAR PRIMARY KEY, revoked_at TIMESTAMPTZ NOT NULL, actor VARCHAR NOT NULL
);
-- Sign-in and signing attempts, for slowing down guessing (a security log, not a record: not in the audit log).
CREATE TABLE IF NOT EXISTS login_attempts (
    user_id VARCHAR NOT NULL, attempted_at TIMESTAMPTZ NOT NULL, ok BOOLEAN NOT NULL
);
-- Electronic signatures: bound to the exact content signed (record_hash), made with the signer's key.
CREATE TABLE IF NOT EXISTS signatures (
    signature_id VARCHAR PRIMARY KEY, record_kind VARCHAR NOT NULL, record_id VARCHAR NOT NULL,
    record_hash VARCHAR NOT NULL, meaning VARCHAR NOT NULL, user_id VARCHAR NOT NULL, full_name VARCHAR NOT NULL,
    key_id VARCHAR NOT NULL, signed_at TIMESTAMPTZ NOT NULL, signature VARCHAR NOT NULL
);
-- The audit log: one entry per change to a record, hash-chained (entry_hash covers the previous entry's hash).
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGINT PRIMARY KEY, logged_at TIMESTAMPTZ NOT NULL, actor VARCHAR NOT NULL, action VARCHAR NOT NULL,
    record_table VARCHAR NOT NULL, record_key VARCHAR NOT NULL, record_hash VARCHAR NOT NULL,
    reason VARCHAR NOT NULL, prev_hash VARCHAR NOT NULL, entry_hash VARCHAR NOT NULL
);
CREATE OR REPLACE VIEW user_state AS
    SELECT u.user_id, u.created_at, u.created_by, h.full_name, h.role, h.disabled, h.changed_at AS state_at
    FROM users u JOIN (SELECT user_id, arg_max(full_name, seq) AS full_name, arg_max(role, seq) AS role,
                              arg_max(disabled, seq) AS disabled, arg_max(changed_at, seq) AS changed_at
                       FROM user_history GROUP BY user_id) h USING (user_id);
