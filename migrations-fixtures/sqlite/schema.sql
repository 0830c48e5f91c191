-- Schema of the assessment app (SQLite 3.40+), written as a backup/restore fixture.
--
-- Same tables as ../postgres/schema.sql, in the types SQLAlchemy uses on SQLite:
--   * INTEGER PRIMARY KEY (rowid alias) everywhere, AUTOINCREMENT on audit_log
--     (so sqlite_sequence exists and must survive a backup)
--   * enums as TEXT + CHECK (... IN ...), JSON as TEXT + CHECK (json_valid(...))
--     (json_valid(NULL) is 0 before SQLite 3.45, hence the explicit IS NULL OR)
--   * timestamps as ISO-8601 TEXT with an explicit UTC offset
--   * BLOB columns (passkey keys, MFA secrets, diagram images)
--   * foreign keys with ON DELETE CASCADE / SET NULL / RESTRICT, a WITHOUT ROWID
--     table, a stored generated column, unique/partial/expression indexes, a view
--
-- No CLI dot-commands: the file can be run with rusqlite's execute_batch.

PRAGMA foreign_keys = ON;

BEGIN;

CREATE TABLE roles (
    id          INTEGER PRIMARY KEY,
    name        VARCHAR(64) NOT NULL UNIQUE,
    description TEXT,
    permissions TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(permissions) AND json_type(permissions) = 'array'),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    email          VARCHAR(255) NOT NULL CHECK (instr(email, '@') > 1),
    display_name   TEXT NOT NULL,
    password_hash  TEXT,                      -- NULL for SSO-only accounts
    locale         VARCHAR(16) NOT NULL DEFAULT 'en',
    time_zone      TEXT NOT NULL DEFAULT 'UTC',
    is_active      BOOLEAN NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    is_admin       BOOLEAN NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    failed_logins  INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    preferences    TEXT CHECK (preferences IS NULL OR json_valid(preferences)),
    last_login_at  TEXT,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    updated_at     TEXT
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE user_roles (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id    INTEGER NOT NULL REFERENCES roles (id) ON DELETE RESTRICT,
    granted_by INTEGER REFERENCES users (id) ON DELETE SET NULL,
    granted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    PRIMARY KEY (user_id, role_id)
) WITHOUT ROWID;
CREATE INDEX user_roles_role_idx ON user_roles (role_id);

CREATE TABLE mfa_settings (
    user_id            INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    totp_enabled       BOOLEAN NOT NULL DEFAULT 0 CHECK (totp_enabled IN (0, 1)),
    totp_secret_enc    BLOB,                  -- encrypted TOTP seed
    recovery_codes     TEXT CHECK (recovery_codes IS NULL OR json_valid(recovery_codes)),
    enforced_by_policy BOOLEAN NOT NULL DEFAULT 0 CHECK (enforced_by_policy IN (0, 1)),
    last_verified_at   TEXT,
    created_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    CHECK (NOT totp_enabled OR totp_secret_enc IS NOT NULL)
);

CREATE TABLE passkey_credentials (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   BLOB NOT NULL UNIQUE,
    public_key      BLOB NOT NULL,            -- COSE_Key
    sign_count      INTEGER NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
    aaguid          CHAR(36),
    transports      TEXT CHECK (transports IS NULL OR json_valid(transports)),
    nickname        TEXT,
    backup_eligible BOOLEAN NOT NULL DEFAULT 0 CHECK (backup_eligible IN (0, 1)),
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    last_used_at    TEXT
);
CREATE INDEX passkey_credentials_user_idx ON passkey_credentials (user_id);

CREATE TABLE bia_context_scope (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL,
    responsible_user_id  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    security_manager     TEXT,
    service_description  TEXT,                -- long text, several KB
    knowledge            TEXT,                -- occasionally tens of KB
    interfaces           TEXT,
    mission_critical     TEXT,
    support_contracts    TEXT,
    status               VARCHAR(9) NOT NULL DEFAULT 'draft'
                         CHECK (status IN ('draft', 'in_review', 'approved', 'archived')),
    last_update          DATE,
    metadata             TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    updated_at           TEXT
);

CREATE TABLE bia_components (
    id                    INTEGER PRIMARY KEY,
    context_scope_id      INTEGER NOT NULL REFERENCES bia_context_scope (id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    info_type             TEXT,
    info_owner            TEXT,
    user_type             TEXT,
    process_dependencies  TEXT,
    description           TEXT,
    rto_hours             INTEGER CHECK (rto_hours IS NULL OR rto_hours >= 0),
    rpo_hours             INTEGER CHECK (rpo_hours IS NULL OR rpo_hours >= 0),
    mtd_hours             NUMERIC(8, 2),
    UNIQUE (context_scope_id, name)
);

CREATE TABLE bia_consequences (
    id                           INTEGER PRIMARY KEY,
    component_id                 INTEGER NOT NULL REFERENCES bia_components (id) ON DELETE CASCADE,
    category                     TEXT NOT NULL CHECK (category IN
        ('financial', 'operational', 'regulatory', 'reputational', 'safety', 'privacy')),
    security_property            TEXT NOT NULL CHECK (security_property IN
        ('confidentiality', 'integrity', 'availability')),
    consequence_worstcase        VARCHAR(8) NOT NULL CHECK (consequence_worstcase IN
        ('very_low', 'low', 'medium', 'high', 'critical')),
    justification_worstcase      TEXT,
    consequence_realisticcase    VARCHAR(8) CHECK (consequence_realisticcase IN
        ('very_low', 'low', 'medium', 'high', 'critical')),
    justification_realisticcase  TEXT,
    financial_impact_eur         NUMERIC(14, 2)
);
CREATE INDEX bia_consequences_component_idx ON bia_consequences (component_id);

CREATE TABLE csa_controls (
    id          INTEGER PRIMARY KEY,
    code        VARCHAR(16) NOT NULL UNIQUE,
    domain      TEXT NOT NULL CHECK (domain IN ('organizational', 'people', 'physical', 'technological')),
    title       TEXT NOT NULL,
    description TEXT,
    guidance    TEXT
);

CREATE TABLE csa_assessments (
    id               INTEGER PRIMARY KEY,
    control_id       INTEGER NOT NULL REFERENCES csa_controls (id) ON DELETE RESTRICT,
    context_scope_id INTEGER NOT NULL REFERENCES bia_context_scope (id) ON DELETE CASCADE,
    assessor_id      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    status           VARCHAR(9) NOT NULL DEFAULT 'draft'
                     CHECK (status IN ('draft', 'in_review', 'approved', 'archived')),
    maturity         INTEGER CHECK (maturity BETWEEN 0 AND 5),
    answers          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(answers)),
    evidence         TEXT,
    started_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    submitted_at     TEXT,
    reviewed_at      TEXT,
    CHECK (submitted_at IS NULL OR submitted_at >= started_at)
);
CREATE INDEX csa_assessments_scope_idx ON csa_assessments (context_scope_id);
CREATE INDEX csa_assessments_open_idx ON csa_assessments (assessor_id) WHERE status IN ('draft', 'in_review');

CREATE TABLE risk_items (
    id               INTEGER PRIMARY KEY,
    context_scope_id INTEGER NOT NULL REFERENCES bia_context_scope (id) ON DELETE CASCADE,
    assessment_id    INTEGER REFERENCES csa_assessments (id) ON DELETE SET NULL,
    owner_id         INTEGER REFERENCES users (id) ON DELETE SET NULL,
    title            TEXT NOT NULL,
    description      TEXT,
    likelihood       INTEGER NOT NULL CHECK (likelihood BETWEEN 1 AND 5),
    impact           INTEGER NOT NULL CHECK (impact BETWEEN 1 AND 5),
    score            INTEGER GENERATED ALWAYS AS (likelihood * impact) STORED,
    level            VARCHAR(8) NOT NULL CHECK (level IN ('very_low', 'low', 'medium', 'high', 'critical')),
    treatment        TEXT NOT NULL DEFAULT 'mitigate' CHECK (treatment IN ('accept', 'mitigate', 'transfer', 'avoid')),
    residual_level   VARCHAR(8) CHECK (residual_level IN ('very_low', 'low', 'medium', 'high', 'critical')),
    due_date         DATE,
    closed_at        TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))
);
CREATE INDEX risk_items_scope_idx ON risk_items (context_scope_id);

-- AUTOINCREMENT: ids are never reused; the counter lives in sqlite_sequence
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    actor_id    INTEGER REFERENCES users (id) ON DELETE SET NULL,
    action      TEXT NOT NULL,
    entity_type TEXT,
    entity_id   INTEGER,
    ip_address  TEXT,
    user_agent  TEXT,
    payload     TEXT CHECK (payload IS NULL OR json_valid(payload)),
    message     TEXT
);
CREATE INDEX audit_log_occurred_idx ON audit_log (occurred_at);
CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id);

CREATE TABLE threat_models (
    id               INTEGER PRIMARY KEY,
    context_scope_id INTEGER REFERENCES bia_context_scope (id) ON DELETE SET NULL,
    owner_id         INTEGER REFERENCES users (id) ON DELETE SET NULL,
    title            TEXT NOT NULL,
    methodology      TEXT NOT NULL DEFAULT 'STRIDE' CHECK (methodology IN ('STRIDE', 'LINDDUN', 'PASTA', 'attack_tree')),
    description      TEXT,
    dfd              TEXT CHECK (dfd IS NULL OR json_valid(dfd)),  -- data-flow diagram as JSON
    diagram_png      BLOB,                          -- rendered diagram (incompressible)
    version          INTEGER NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')),
    updated_at       TEXT
);

CREATE TABLE threat_scenarios (
    id               INTEGER PRIMARY KEY,
    threat_model_id  INTEGER NOT NULL REFERENCES threat_models (id) ON DELETE CASCADE,
    related_risk_id  INTEGER REFERENCES risk_items (id) ON DELETE SET NULL,
    stride_category  TEXT NOT NULL CHECK (stride_category IN ('spoofing', 'tampering', 'repudiation',
                         'information_disclosure', 'denial_of_service', 'elevation_of_privilege')),
    title            TEXT NOT NULL,
    description      TEXT,
    attack_vector    TEXT,
    likelihood       VARCHAR(8) NOT NULL CHECK (likelihood IN ('very_low', 'low', 'medium', 'high', 'critical')),
    impact           VARCHAR(8) NOT NULL CHECK (impact IN ('very_low', 'low', 'medium', 'high', 'critical')),
    mitigations      TEXT CHECK (mitigations IS NULL OR json_valid(mitigations)),
    tags             TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))
);
CREATE INDEX threat_scenarios_model_idx ON threat_scenarios (threat_model_id);

CREATE VIEW v_risk_register AS
SELECT r.id,
       s.name          AS scope_name,
       r.title,
       r.level,
       r.score,
       r.treatment,
       u.display_name  AS owner_name,
       r.due_date,
       r.closed_at IS NULL AS is_open
FROM risk_items r
JOIN bia_context_scope s ON s.id = r.context_scope_id
LEFT JOIN users u ON u.id = r.owner_id;

COMMIT;
