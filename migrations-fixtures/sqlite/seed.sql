-- Seed data for the assessment app fixture (SQLite 3.40+).
--
-- The loader must first create the scale table, then run this file (as one
-- batch, e.g. rusqlite's execute_batch, or the sqlite3 CLI's .read):
--   CREATE TEMP TABLE fixture_scale(n INTEGER NOT NULL);
--   INSERT INTO fixture_scale VALUES (1);
--
-- Per scale unit: 20 users, ~27 user_roles, 15 mfa_settings, 10 passkeys,
-- 3 scopes, 15 components, 30 consequences, 40 assessments, 20 risks,
-- 80 audit_log entries, 3 threat models, 15 threat scenarios.
-- Fixed: 7 roles, 93 controls.  Same row counts as ../postgres/seed.sql.
--
-- Text is cut from a pool of 200 000 random tokens (words or stock phrases);
-- which window a row gets is derived from its id.  Texts get 3/5 of the
-- token counts used in ../postgres/seed.sql: PostgreSQL compresses long
-- values (TOAST), SQLite does not, and this keeps the database size per
-- scale unit of the two roughly alike.  Each
--   (SELECT group_concat(t, ' ') FROM temp.fx_tok
--    WHERE i BETWEEN 1 + (ID * 2654435761 + SALT) % 190000 AND (...) % 190000 + (N) * 3 / 5)
-- below is such a window: N*3/5 tokens, SALT differs per column.  Random bytes come from
-- randomblob(), so the data is not bit-for-bit reproducible (SQLite's
-- random() cannot be seeded from SQL).  Blob prefixes are built with
-- CAST(x'..' || randomblob(n) AS BLOB), which keeps the bytes as they are.

PRAGMA foreign_keys = ON;

BEGIN;

-- ------------------------------------------------------------- helpers (temp)
CREATE TEMP TABLE fx_vocab (id INTEGER PRIMARY KEY, w TEXT NOT NULL);
INSERT INTO temp.fx_vocab (w) SELECT value FROM json_each('[
  "access","account","accountability","acquisition","active","administrator","after","agreement",
  "alert","analysis","and","anomaly","application","approval","archive","asset","assurance","attack",
  "attacker","audit","authentication","authorization","availability","awareness","backup","baseline",
  "before","behaviour","boundary","breach","budget","business","capacity","certificate","change",
  "channel","classification","client","cloud","compliance","component","configuration",
  "confidentiality","consequence","containment","continuity","contract","control","credential",
  "critical","cryptography","customer","damage","dashboard","data","database","decision","dependency",
  "deployment","detection","device","disaster","disclosure","document","domain","downtime","duty",
  "effective","employee","encryption","endpoint","environment","escalation","evidence","exception",
  "exposure","external","failure","finance","firewall","forensic","framework","function","governance",
  "guideline","hardening","hazard","identity","impact","incident","information","infrastructure",
  "integrity","interface","internal","inventory","isolation","key","laptop","latency","legal","level",
  "likelihood","log","maintenance","malware","manager","measure","monitoring","network","objective",
  "obligation","operation","outage","outsourcing","owner","partner","password","patch","payment",
  "penalty","personnel","phishing","physical","policy","portal","privacy","privilege","procedure",
  "process","processor","production","protection","provider","quarterly","ransomware","recovery",
  "redundancy","regulation","regulator","release","remote","report","reputation","requirement",
  "residual","resilience","resource","response","responsibility","restore","retention","review",
  "risk","role","rotation","safeguard","scenario","schedule","scope","secret","segmentation",
  "sensitive","server","service","session","severity","signature","staff","stakeholder","storage",
  "supplier","supply","system","tampering","target","team","technical","test","third-party","threat",
  "token","training","transfer","treatment","trust","unauthorized","update","user","validation",
  "vendor","verification","vulnerability","weakness","workflow","workstation","the","the","the","of",
  "of","of","to","to","a","a","in","in","is","is","for","for","with","on","by","be","are","must",
  "should","may","not","this","that","each","within","without","between","during","across","when",
  "where","which","all","any","only","also","however","therefore","annually","monthly","weekly",
  "daily","immediately","documented","approved","reviewed","tested","implemented","planned",
  "partially","fully","significant","limited","moderate","severe","minor","major","two-factor","SSO",
  "SAML","OIDC","TLS","VPN","SIEM","SOC","DPIA","GDPR","NIS2","DORA","ISO","RTO","RPO","MTD","API",
  "Datenschutz","Sicherheitsvorfall","Überprüfung","Geschäftsprozess","sécurité","contrôle",
  "évaluation","données","réseau","continuïteit","beveiliging","ångest","søknad","información",
  "análisis","情報セキュリティ","リスク評価","事業継続","风险","数据","安全","보안","정보 자산","أمن","المعلومات","مخاطر","סיכון",
  "אבטחה","Безопасность","риск","ασφάλεια","κίνδυνος","🔐","⚠️","✅","🚨","👩‍💻"]');

CREATE TEMP TABLE fx_phrase (id INTEGER PRIMARY KEY, p TEXT NOT NULL);
INSERT INTO temp.fx_phrase (p) SELECT value FROM json_each('[
  "in accordance with the information security policy","the risk owner is responsible for",
  "as agreed with the supplier","no compensating controls are in place",
  "access rights are reviewed on a quarterly basis",
  "multi-factor authentication is enforced for all administrators",
  "backups are encrypted at rest and a restore is tested every month",
  "the recovery time objective cannot be met without","outside office hours",
  "depending on the outcome of the review","personal data of customers and employees",
  "a personal data breach must be reported to the supervisory authority within 72 hours",
  "the impact on business operations would be","see the attached evidence",
  "pending approval by the CISO","until the migration to the new platform is completed",
  "all logging is forwarded to the central SIEM","only authorised personnel have access to",
  "the vendor provides a yearly SOC 2 type II report",
  "this finding was raised during the last internal audit","in the worst case",
  "in a realistic scenario","reputational damage and loss of customer trust",
  "fines of up to 4% of the annual turnover","a manual workaround is available for up to two days",
  "the service is hosted in two geographically separated data centres",
  "security patches are applied within 14 days of release",
  "critical vulnerabilities are remediated within 72 hours",
  "password rotation is no longer required since passkeys were introduced","the process depends on",
  "shared service accounts are still in use","the network is segmented into separate zones",
  "according to the business continuity plan","further analysis is required",
  "the control is partially implemented","no evidence could be provided",
  "responsibilities are documented in the RACI matrix",
  "the contract does not include a right to audit","the data is classified as confidential",
  "the application is exposed to the internet","an external penetration test was performed",
  "there is a single point of failure in","the team lacks the capacity to",
  "as discussed in the steering committee","the residual risk is accepted by management",
  "a new assessment is planned for next quarter","the incident response plan was updated",
  "de verwerking van persoonsgegevens","die Verfügbarkeit des Dienstes ist kritisch",
  "la confidentialité des données de santé","事業への影響は限定的である","数据备份每天执行一次",
  "يجب مراجعة الصلاحيات كل ثلاثة أشهر","יש לבצע גיבוי יומי לכל המערכות",
  "доступ предоставляется по заявке","η διαθεσιμότητα της υπηρεσίας"]');

-- integers 1 .. max(200000, 80 * scale)
CREATE TEMP TABLE fx_n (g INTEGER PRIMARY KEY);
WITH RECURSIVE c(g) AS (
    SELECT 1
    UNION ALL
    SELECT g + 1 FROM c WHERE g < max(200000, 80 * (SELECT n FROM temp.fixture_scale))
)
INSERT INTO temp.fx_n (g) SELECT g FROM c;

-- token pool: 30% stock phrases, 70% single words, with some punctuation
CREATE TEMP TABLE fx_tok (i INTEGER PRIMARY KEY, t TEXT NOT NULL);
INSERT INTO temp.fx_tok (i, t)
SELECT r.g,
       CASE WHEN r.a % 10 < 3
            THEN (SELECT p FROM temp.fx_phrase WHERE id = 1 + r.b % (SELECT count(*) FROM temp.fx_phrase))
            ELSE (SELECT w FROM temp.fx_vocab WHERE id = 1 + r.b % (SELECT count(*) FROM temp.fx_vocab))
       END
       || CASE WHEN r.g % 83 = 0 THEN '.' || char(10, 10)
               WHEN r.g % 11 = 0 THEN '.'
               WHEN r.g % 7 = 0 THEN ','
               ELSE '' END
FROM (SELECT g, (random() & 2147483647) AS a, (random() & 2147483647) AS b
      FROM temp.fx_n WHERE g <= 200000) AS r;

-- ---------------------------------------------------------------- roles
INSERT INTO roles (id, name, description, permissions, created_at) VALUES
  (1, 'admin',       'Full access, including user and backup management',
      '["users:*","roles:*","scopes:*","assessments:*","risks:*","audit:read","backup:*"]', '2022-01-03 08:00:00.000+00:00'),
  (2, 'assessor',    'Performs control self-assessments',
      '["scopes:read","assessments:write","risks:read"]', '2022-01-03 08:00:00.000+00:00'),
  (3, 'reviewer',    'Reviews and approves assessments',
      '["scopes:read","assessments:review","risks:write"]', '2022-01-03 08:00:00.000+00:00'),
  (4, 'risk_owner',  'Owns and treats risks in a scope',
      '["scopes:read","risks:write"]', '2022-01-03 08:00:00.000+00:00'),
  (5, 'viewer',      NULL, '["scopes:read"]', '2022-01-03 08:00:00.000+00:00'),
  (6, 'auditor',     'Read-only access including the audit log',
      '["scopes:read","assessments:read","risks:read","audit:read"]', '2022-02-14 08:30:00.000+00:00'),
  (7, 'référent-sécurité 🔐', 'Référent sécurité de l''entité — accès étendu aux analyses d''impact',
      '["scopes:*","assessments:review"]', '2023-06-01 10:00:00.000+00:00');

-- ---------------------------------------------------------------- users
INSERT INTO users (id, email, display_name, password_hash, locale, time_zone, is_active, is_admin,
                   failed_logins, preferences, last_login_at, created_at, updated_at)
SELECT g,
       CASE WHEN g % 37 = 0 THEN 'zoë.' || g || '@bücher.example'
            ELSE 'u' || g || '.' || lower(hex(randomblob(3))) || '@'
                 || ('["example.org","example.com","corp.example.net","assess.example"]' ->> ((random() & 2147483647) % 4))
       END,
       ('["Anna","José","Zoë","Łukasz","Søren","Chloé","Mehmet","Ævar","Björn","Françoise","Jürgen","Siobhán","Nguyễn","美咲","Иван","Δημήτρης","محمد","שרה","Priya","Oluwaseun","Jan","Sanne","Pieter","Émilie","Ines","Kwame","Aroha","Mei","Lars","Fatima","Diego","Ngozi","Hiroshi","Ana","Tomáš","Ewa"]' ->> ((random() & 2147483647) % 36)) || ' ' || ('["de Vries","Müller","Ångström","Kowalski","OBrien","García Márquez","van der Berg","Østergaard","Jansen","田中","王","Петров","Παπαδόπουλος","العلي","כהן","Ní Bhriain","Smith","Dąbrowski","Nakamura","Okafor","Haddad","Svensson","Novák","Rossi","Bakker","Yılmaz","Nowak","Lefèvre"]' ->> ((random() & 2147483647) % 28)) || CASE WHEN g % 50 = 0 THEN ' 👩‍💻' ELSE '' END,
       CASE WHEN g % 7 = 0 THEN NULL
            ELSE 'scrypt:32768:8:1$' || lower(hex(randomblob(8))) || '$' || lower(hex(randomblob(64)))
       END,
       '["en","en","en","nl","de","fr","ja","ar","he","zh-Hans","pt-BR"]' ->> ((random() & 2147483647) % 11),
       '["UTC","Europe/Amsterdam","Europe/Berlin","America/New_York","Asia/Tokyo","Asia/Jerusalem","Australia/Sydney"]' ->> ((random() & 2147483647) % 7),
       g % 23 <> 0,
       g % 10 = 1,
       g % 5,
       CASE WHEN g % 4 = 0 THEN NULL
            ELSE json_object(
                   'theme', '["light","dark","system"]' ->> ((random() & 2147483647) % 3),
                   'notifications', json_object('email', json(CASE WHEN g % 3 <> 0 THEN 'true' ELSE 'false' END),
                                                'digest', '["daily","weekly","never"]' ->> ((random() & 2147483647) % 3)),
                   'dashboard', json_array('risks', 'assessments', CASE WHEN g % 2 = 0 THEN 'audit' END),
                   'signature', (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 1) % 190000 AND ((g) * 2654435761 + 1) % 190000 + (8 + g % 9) * 3 / 5))
       END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE strftime('%Y-%m-%d %H:%M:%f+00:00', '2024-01-01', '+' || (((random() & 2147483647) % 34560000000) / 1000.0) || ' seconds') END,
       strftime('%Y-%m-%d %H:%M:%f+00:00', '2022-01-03', '+' || (((random() & 2147483647) % 60480000000) / 1000.0) || ' seconds'),
       CASE WHEN g % 3 = 0 THEN strftime('%Y-%m-%d %H:%M:%f+00:00', '2024-06-01', '+' || (((random() & 2147483647) % 8640000000) / 1000.0) || ' seconds') END
FROM temp.fx_n
WHERE g <= 20 * (SELECT n FROM temp.fixture_scale);

-- ---------------------------------------------------------------- user_roles
INSERT INTO user_roles (user_id, role_id, granted_by, granted_at)
SELECT u.id, r.role_id, CASE WHEN u.id = 1 THEN NULL ELSE 1 END,
       strftime('%Y-%m-%d %H:%M:%f+00:00', u.created_at, '+5 minutes')
FROM users u
JOIN (SELECT 1 AS role_id UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
      UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7) AS r
  ON r.role_id = 2 + u.id % 5
  OR (r.role_id = 1 AND u.id % 10 = 1)
  OR (r.role_id = 7 AND u.id % 4 = 0);

-- ---------------------------------------------------------------- mfa_settings
INSERT INTO mfa_settings (user_id, totp_enabled, totp_secret_enc, recovery_codes,
                          enforced_by_policy, last_verified_at, created_at)
SELECT u.id,
       u.id % 3 <> 0,
       CASE WHEN u.id % 3 <> 0 OR u.id % 2 = 0 THEN CAST(x'80' || randomblob(71) AS BLOB) END,
       CASE WHEN u.id % 3 <> 0 THEN
            (SELECT json_group_array(json_object('h', lower(hex(randomblob(32))),
                                                 'used', json(CASE WHEN c.g % 4 = 0 THEN 'true' ELSE 'false' END)))
             FROM temp.fx_n AS c WHERE c.g <= 10 + 0 * u.id)
       END,
       u.is_admin,
       CASE WHEN u.id % 3 <> 0
            THEN strftime('%Y-%m-%d %H:%M:%f+00:00', u.created_at, '+' || ((random() & 2147483647) % 25920000) || ' seconds') END,
       strftime('%Y-%m-%d %H:%M:%f+00:00', u.created_at, '+1 hours')
FROM users u
WHERE u.id % 4 <> 0;

-- ---------------------------------------------------------------- passkey_credentials
INSERT INTO passkey_credentials (id, user_id, credential_id, public_key, sign_count, aaguid,
                                 transports, nickname, backup_eligible, created_at, last_used_at)
SELECT g,
       1 + (g * 3) % (20 * (SELECT n FROM temp.fixture_scale)),
       randomblob(32),
       -- COSE_Key, EC2 / P-256: map header, x and y coordinates
       CAST(x'a501020326200121582000' || randomblob(31) || x'225820' || randomblob(32) AS BLOB),
       CASE WHEN g % 5 = 0 THEN 0 ELSE (random() & 2147483647) % 5000 END,
       CASE WHEN g % 3 = 0 THEN NULL
            ELSE lower(substr(hex(randomblob(16)), 1, 8) || '-' || substr(hex(randomblob(2)), 1, 4) || '-4'
                       || substr(hex(randomblob(2)), 2, 3) || '-a' || substr(hex(randomblob(2)), 2, 3) || '-'
                       || hex(randomblob(6))) END,
       CASE g % 4 WHEN 0 THEN '["internal","hybrid"]' WHEN 1 THEN '["usb","nfc"]' WHEN 2 THEN '[]' ELSE NULL END,
       CASE g % 6 WHEN 0 THEN 'YubiKey 5 NFC 🔑'
                  WHEN 1 THEN 'iPhone von Jürgen'
                  WHEN 2 THEN 'MacBook Touch ID'
                  WHEN 3 THEN 'ノートPC (会社)'
                  WHEN 4 THEN NULL
                  ELSE 'مفتاح الأمان' END,
       g % 4 = 0,
       strftime('%Y-%m-%d %H:%M:%f+00:00', '2023-03-01', '+' || (((random() & 2147483647) % 43200000000) / 1000.0) || ' seconds'),
       CASE WHEN g % 5 = 0 THEN NULL ELSE strftime('%Y-%m-%d %H:%M:%f+00:00', '2024-09-01', '+' || (((random() & 2147483647) % 5184000000) / 1000.0) || ' seconds') END
FROM temp.fx_n
WHERE g <= 10 * (SELECT n FROM temp.fixture_scale);

-- ---------------------------------------------------------------- bia_context_scope
INSERT INTO bia_context_scope (id, name, responsible_user_id, security_manager, service_description,
                               knowledge, interfaces, mission_critical, support_contracts, status,
                               last_update, metadata, created_at, updated_at)
SELECT g,
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 2) % 190000 AND ((g) * 2654435761 + 2) % 190000 + (2) * 3 / 5) || ' — '
         || ('["Payroll","CRM","Patient portal","Webshop","ERP","Klantportaal","Système de facturation","人事システム","Data warehouse","HR"]' ->> ((random() & 2147483647) % 10))
         || ' #' || g,
       CASE WHEN g % 9 = 0 THEN NULL ELSE 1 + (g * 7) % (20 * (SELECT n FROM temp.fixture_scale)) END,
       ('["Anna","José","Zoë","Łukasz","Søren","Chloé","Mehmet","Ævar","Björn","Françoise","Jürgen","Siobhán","Nguyễn","美咲","Иван","Δημήτρης","محمد","שרה","Priya","Oluwaseun","Jan","Sanne","Pieter","Émilie","Ines","Kwame","Aroha","Mei","Lars","Fatima","Diego","Ngozi","Hiroshi","Ana","Tomáš","Ewa"]' ->> ((random() & 2147483647) % 36)) || ' ' || ('["de Vries","Müller","Ångström","Kowalski","OBrien","García Márquez","van der Berg","Østergaard","Jansen","田中","王","Петров","Παπαδόπουλος","العلي","כהן","Ní Bhriain","Smith","Dąbrowski","Nakamura","Okafor","Haddad","Svensson","Novák","Rossi","Bakker","Yılmaz","Nowak","Lefèvre"]' ->> ((random() & 2147483647) % 28)),
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 3) % 190000 AND ((g) * 2654435761 + 3) % 190000 + (200 + (g % 5) * 40) * 3 / 5),
       CASE WHEN g % 10 = 1 THEN (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 4) % 190000 AND ((g) * 2654435761 + 4) % 190000 + (2000 + (g % 3) * 1000) * 3 / 5)      -- ~35-70 KB
            WHEN g % 5 = 3 THEN NULL
            ELSE (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 5) % 190000 AND ((g) * 2654435761 + 5) % 190000 + (60 + (g % 7) * 15) * 3 / 5) END,
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 6) % 190000 AND ((g) * 2654435761 + 6) % 190000 + (60) * 3 / 5),
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 7) % 190000 AND ((g) * 2654435761 + 7) % 190000 + (30) * 3 / 5),
       CASE WHEN g % 4 = 0 THEN NULL
            ELSE 'Contract ' || upper(hex(randomblob(4))) || ':' || char(10) || (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 8) % 190000 AND ((g) * 2654435761 + 8) % 190000 + (40) * 3 / 5) END,
       '["draft","in_review","approved","archived"]' ->> ((random() & 2147483647) % 4),
       date('2023-01-01', '+' || (g % 600) || ' days'),
       json_object(
           'department', '["Finance","IT","HR","Legal","Operations","Sales","Recherche & Développement"]' ->> ((random() & 2147483647) % 7),
           'cia', json_object('c', 1 + g % 4, 'i', 1 + (g / 2) % 4, 'a', 1 + (g / 3) % 4),
           'tags', json_array('["gdpr","nis2","dora","pci","sox","hipaa"]' ->> ((random() & 2147483647) % 6), 'scope-' || g),
           'note', CASE WHEN g % 2 = 0 THEN '情報資産の棚卸しは四半期ごとに実施' END),
       strftime('%Y-%m-%d %H:%M:%f+00:00', '2022-03-01', '+' || (((random() & 2147483647) % 51840000000) / 1000.0) || ' seconds'),
       CASE WHEN g % 3 = 0 THEN NULL ELSE strftime('%Y-%m-%d %H:%M:%f+00:00', '2024-05-01', '+' || (((random() & 2147483647) % 12960000000) / 1000.0) || ' seconds') END
FROM temp.fx_n
WHERE g <= 3 * (SELECT n FROM temp.fixture_scale);

-- ---------------------------------------------------------------- bia_components
INSERT INTO bia_components (id, context_scope_id, name, info_type, info_owner, user_type,
                            process_dependencies, description, rto_hours, rpo_hours, mtd_hours)
SELECT g,
       1 + (g - 1) / 5,
       ('["Customer database","Payment gateway","File share","Mail server","Identity provider","Reporting cube","Webserver","Backup vault","Laptop-fleet","Zeiterfassung","Boîte-mail"]' ->> ((random() & 2147483647) % 11)) || ' ' || g,
       '["Personal data","Financial records","Source code","Health data (GDPR art. 9)","Operational telemetry","Contracts","Données clients","個人情報"]' ->> ((random() & 2147483647) % 8),
       ('["Anna","José","Zoë","Łukasz","Søren","Chloé","Mehmet","Ævar","Björn","Françoise","Jürgen","Siobhán","Nguyễn","美咲","Иван","Δημήτρης","محمد","שרה","Priya","Oluwaseun","Jan","Sanne","Pieter","Émilie","Ines","Kwame","Aroha","Mei","Lars","Fatima","Diego","Ngozi","Hiroshi","Ana","Tomáš","Ewa"]' ->> ((random() & 2147483647) % 36)) || ' ' || ('["de Vries","Müller","Ångström","Kowalski","OBrien","García Márquez","van der Berg","Østergaard","Jansen","田中","王","Петров","Παπαδόπουλος","العلي","כהן","Ní Bhriain","Smith","Dąbrowski","Nakamura","Okafor","Haddad","Svensson","Novák","Rossi","Bakker","Yılmaz","Nowak","Lefèvre"]' ->> ((random() & 2147483647) % 28)),
       '["internal","external","customers","partners","internal + external"]' ->> ((random() & 2147483647) % 5),
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 9) % 190000 AND ((g) * 2654435761 + 9) % 190000 + (15 + g % 20) * 3 / 5),
       CASE WHEN g % 8 = 0 THEN NULL ELSE (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 10) % 190000 AND ((g) * 2654435761 + 10) % 190000 + (40 + (g % 9) * 10) * 3 / 5) END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE '[1,4,8,24,72,168]' ->> (g % 6) END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE '[0,1,4,24]' ->> (g % 4) END,
       round(((random() & 2147483647) % 50000) / 100.0, 2)
FROM temp.fx_n
WHERE g <= 15 * (SELECT n FROM temp.fixture_scale);

-- ---------------------------------------------------------------- bia_consequences
INSERT INTO bia_consequences (id, component_id, category, security_property, consequence_worstcase,
                              justification_worstcase, consequence_realisticcase,
                              justification_realisticcase, financial_impact_eur)
SELECT g,
       1 + (g - 1) / 2,
       '["financial","operational","regulatory","reputational","safety","privacy"]' ->> (g % 6),
       '["confidentiality","integrity","availability"]' ->> ((g / 6) % 3),
       '["very_low","low","medium","high","critical"]' ->> ((random() & 2147483647) % 5),
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 11) % 190000 AND ((g) * 2654435761 + 11) % 190000 + (30 + g % 40) * 3 / 5),
       CASE WHEN g % 7 = 0 THEN NULL ELSE '["very_low","low","medium","high","critical"]' ->> ((random() & 2147483647) % 5) END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 12) % 190000 AND ((g) * 2654435761 + 12) % 190000 + (20 + g % 30) * 3 / 5) END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE round(((random() & 2147483647) % 250000000) / 100.0, 2) END
FROM temp.fx_n
WHERE g <= 30 * (SELECT n FROM temp.fixture_scale);

-- ---------------------------------------------------------------- csa_controls (fixed catalogue)
INSERT INTO csa_controls (id, code, domain, title, description, guidance)
SELECT row_number() OVER (ORDER BY d.ord, c.g),
       'A.' || d.chapter || '.' || c.g,
       d.domain,
       'Control ' || d.chapter || '.' || c.g || ': ' || (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((d.chapter * 100 + c.g) * 2654435761 + 13) % 190000 AND ((d.chapter * 100 + c.g) * 2654435761 + 13) % 190000 + (3 + c.g % 4) * 3 / 5),
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((d.chapter * 100 + c.g) * 2654435761 + 14) % 190000 AND ((d.chapter * 100 + c.g) * 2654435761 + 14) % 190000 + (10 + c.g % 15) * 3 / 5),
       CASE WHEN c.g % 3 = 0 THEN NULL ELSE (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((d.chapter * 100 + c.g) * 2654435761 + 15) % 190000 AND ((d.chapter * 100 + c.g) * 2654435761 + 15) % 190000 + (20 + c.g % 30) * 3 / 5) END
FROM (SELECT 1 AS ord, 5 AS chapter, 'organizational' AS domain, 37 AS cnt
      UNION ALL SELECT 2, 6, 'people', 8
      UNION ALL SELECT 3, 7, 'physical', 14
      UNION ALL SELECT 4, 8, 'technological', 34) AS d
JOIN temp.fx_n AS c ON c.g <= d.cnt
ORDER BY d.ord, c.g;

-- ---------------------------------------------------------------- csa_assessments
INSERT INTO csa_assessments (id, control_id, context_scope_id, assessor_id, status, maturity, answers,
                             evidence, started_at, submitted_at, reviewed_at)
WITH t AS MATERIALIZED (
    SELECT g,
           1 + g % 93                                                          AS control_id,
           1 + g % (3 * (SELECT n FROM temp.fixture_scale))                   AS scope_id,
           CASE WHEN g % 11 = 0 THEN NULL
                ELSE 1 + (g * 13) % (20 * (SELECT n FROM temp.fixture_scale)) END AS assessor_id,
           '["draft","in_review","approved","archived"]' ->> ((random() & 2147483647) % 4)     AS status,
           CASE WHEN g % 9 = 0 THEN NULL ELSE g % 6 END                        AS maturity,
           strftime('%Y-%m-%d %H:%M:%f+00:00', '2023-01-01', '+' || (((random() & 2147483647) % 51840000000) / 1000.0) || ' seconds')                                          AS started_at
    FROM temp.fx_n
    WHERE g <= 40 * (SELECT n FROM temp.fixture_scale)
)
SELECT g, control_id, scope_id, assessor_id, status, maturity,
       json_object(
           'version', 2,
           'questions', (SELECT json_group_array(json_object(
                                    'q', q.g,
                                    'answer', '["yes","no","partial","n/a"]' ->> ((random() & 2147483647) % 4),
                                    'comment', CASE WHEN (t.g + q.g) % 3 = 0 THEN NULL
                                                    ELSE (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((t.g * 7 + q.g) * 2654435761 + 16) % 190000 AND ((t.g * 7 + q.g) * 2654435761 + 16) % 190000 + (6 + q.g) * 3 / 5) END))
                         FROM temp.fx_n AS q WHERE q.g <= 3 + t.g % 4),
           'score', maturity,
           'attachments', CASE WHEN g % 5 = 0
                               THEN json_array('evidence-' || g || '.pdf', 'screenshot ' || g || '.png')
                               ELSE json('[]') END),
       CASE WHEN g % 4 = 0 THEN NULL ELSE (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 17) % 190000 AND ((g) * 2654435761 + 17) % 190000 + (20 + g % 40) * 3 / 5) END,
       started_at,
       CASE WHEN status <> 'draft'
            THEN strftime('%Y-%m-%d %H:%M:%f+00:00', started_at, '+' || ((random() & 2147483647) % 1728000) || ' seconds') END,
       CASE WHEN status IN ('approved', 'archived')
            THEN strftime('%Y-%m-%d %H:%M:%f+00:00', started_at, '+21 days', '+' || ((random() & 2147483647) % 864000) || ' seconds') END
FROM t;

-- ---------------------------------------------------------------- risk_items
INSERT INTO risk_items (id, context_scope_id, assessment_id, owner_id, title, description, likelihood,
                        impact, level, treatment, residual_level, due_date, closed_at, created_at)
SELECT g,
       1 + g % (3 * (SELECT n FROM temp.fixture_scale)),
       CASE WHEN g % 3 = 0 THEN NULL ELSE 2 * g END,
       CASE WHEN g % 8 = 0 THEN NULL ELSE 1 + (g * 11) % (20 * (SELECT n FROM temp.fixture_scale)) END,
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 18) % 190000 AND ((g) * 2654435761 + 18) % 190000 + (4 + g % 4) * 3 / 5),
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 19) % 190000 AND ((g) * 2654435761 + 19) % 190000 + (80 + g % 80) * 3 / 5),
       1 + g % 5,
       1 + (g / 5) % 5,
       CASE WHEN (1 + g % 5) * (1 + (g / 5) % 5) >= 20 THEN 'critical'
            WHEN (1 + g % 5) * (1 + (g / 5) % 5) >= 12 THEN 'high'
            WHEN (1 + g % 5) * (1 + (g / 5) % 5) >= 6 THEN 'medium'
            WHEN (1 + g % 5) * (1 + (g / 5) % 5) >= 3 THEN 'low'
            ELSE 'very_low' END,
       '["accept","mitigate","mitigate","transfer","avoid"]' ->> (g % 5),
       CASE WHEN g % 4 = 0 THEN NULL ELSE '["very_low","low","medium","high","critical"]' ->> ((random() & 2147483647) % 5) END,
       date('2024-01-01', '+' || ((g * 7) % 700) || ' days'),
       CASE WHEN g % 6 = 0 THEN strftime('%Y-%m-%d %H:%M:%f+00:00', '2024-02-01', '+' || (((random() & 2147483647) % 17280000000) / 1000.0) || ' seconds') END,
       strftime('%Y-%m-%d %H:%M:%f+00:00', '2023-02-01', '+' || (((random() & 2147483647) % 43200000000) / 1000.0) || ' seconds')
FROM temp.fx_n
WHERE g <= 20 * (SELECT n FROM temp.fixture_scale);

-- ---------------------------------------------------------------- audit_log
-- ids come from AUTOINCREMENT; start them at 100000 like the PostgreSQL sequence
INSERT INTO sqlite_sequence (name, seq) VALUES ('audit_log', 99999);

INSERT INTO audit_log (occurred_at, actor_id, action, entity_type, entity_id, ip_address, user_agent,
                       payload, message)
SELECT strftime('%Y-%m-%d %H:%M:%f+00:00', '2023-01-01',
                '+' || ((g * 63072000000) / (80 * (SELECT n FROM temp.fixture_scale)) / 1000.0) || ' seconds'),
       CASE WHEN g % 10 = 0 THEN NULL ELSE 1 + (g * 17) % (20 * (SELECT n FROM temp.fixture_scale)) END,
       a.action,
       a.entity_type,
       CASE WHEN a.entity_type IS NULL THEN NULL ELSE 1 + g % (3 * (SELECT n FROM temp.fixture_scale)) END,
       CASE WHEN g % 13 = 0 THEN NULL
            WHEN g % 5 = 0 THEN '2001:db8:' || lower(printf('%x', g % 65536)) || '::' || lower(printf('%x', g % 4093 + 1))
            ELSE '10.' || ((g / 65536) % 256) || '.' || ((g / 256) % 256) || '.' || (g % 256) END,
       CASE WHEN g % 13 = 0 THEN NULL
            ELSE '["Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0","Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15","Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36","python-requests/2.32.3","curl/8.8.0","backupd/0.1"]' ->> ((random() & 2147483647) % 6)
       END,
       json_object(
           'request_id', lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-' || hex(randomblob(2)) || '-'
                               || hex(randomblob(2)) || '-' || hex(randomblob(6))),
           'method', CASE WHEN a.action LIKE '%update' OR a.action LIKE '%create' THEN 'POST' ELSE 'GET' END,
           'route', '/' || coalesce(a.entity_type, 'auth') || '/' || (g % 1000),
           'status', '[200,200,200,302,401,403,500]' ->> (g % 7),
           'duration_ms', round(((random() & 2147483647) % 900000) / 1000.0, 3),
           'changes', CASE WHEN a.action LIKE '%update' THEN json_object(
                            'field', '["description","status","owner","likelihood","justification"]' ->> ((random() & 2147483647) % 5),
                            'old', (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 20) % 190000 AND ((g) * 2654435761 + 20) % 190000 + (5 + g % 40) * 3 / 5),
                            'new', (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 21) % 190000 AND ((g) * 2654435761 + 21) % 190000 + (5 + g % 45) * 3 / 5)) END),
       CASE WHEN g % 97 = 0 THEN
                 'multi-line entry' || char(10) || 'with' || char(9) || 'tabs, a back\slash, "double" and ''single'' quotes'
                 || char(10) || '\.' || char(10) || '(the line above is a lone backslash-dot) \N is not NULL'
                 || char(13, 10) || 'end'
            WHEN g % 89 = 0 THEN ''
            WHEN g % 83 = 0 THEN '\N'
            WHEN g % 31 = 0 THEN 'تم تحديث تقييم المخاطر — הערכת הסיכונים עודכנה — 风险评估已更新 ✅'
            WHEN g % 3 = 0 THEN NULL
            ELSE (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 22) % 190000 AND ((g) * 2654435761 + 22) % 190000 + (10 + g % 50) * 3 / 5) END
FROM temp.fx_n
JOIN (SELECT 0 AS k, 'login' AS action, NULL AS entity_type
      UNION ALL SELECT 1, 'logout', NULL
      UNION ALL SELECT 2, 'login_failed', NULL
      UNION ALL SELECT 3, 'mfa.verified', NULL
      UNION ALL SELECT 4, 'passkey.registered', 'passkey'
      UNION ALL SELECT 5, 'assessment.update', 'assessment'
      UNION ALL SELECT 6, 'risk.create', 'risk'
      UNION ALL SELECT 7, 'risk.update', 'risk'
      UNION ALL SELECT 8, 'scope.export', 'scope'
      UNION ALL SELECT 9, 'user.role_granted', 'user'
      UNION ALL SELECT 10, 'backup.download', NULL
      UNION ALL SELECT 11, 'settings.update', 'settings') AS a
  ON a.k = (g * 7) % 12
WHERE g <= 80 * (SELECT n FROM temp.fixture_scale)
ORDER BY g;

-- ---------------------------------------------------------------- threat_models
INSERT INTO threat_models (id, context_scope_id, owner_id, title, methodology, description, dfd,
                           diagram_png, version, created_at, updated_at)
SELECT g,
       CASE WHEN g % 5 = 0 THEN NULL ELSE g END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE 1 + (g * 5) % (20 * (SELECT n FROM temp.fixture_scale)) END,
       'Threat model: ' || (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 23) % 190000 AND ((g) * 2654435761 + 23) % 190000 + (3) * 3 / 5),
       '["STRIDE","STRIDE","LINDDUN","PASTA","attack_tree"]' ->> (g % 5),
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 24) % 190000 AND ((g) * 2654435761 + 24) % 190000 + (150 + g % 100) * 3 / 5),
       json_object(
           'nodes', (SELECT json_group_array(json_object(
                                'id', 'n' || k.g,
                                'label', (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g * 31 + k.g) * 2654435761 + 25) % 190000 AND ((g * 31 + k.g) * 2654435761 + 25) % 190000 + (1) * 3 / 5),
                                'type', '["process","datastore","external","trust_boundary"]' ->> ((random() & 2147483647) % 4),
                                'zone', 1 + k.g % 3))
                     FROM temp.fx_n AS k WHERE k.g <= 6 + g % 8),
           'flows', (SELECT json_group_array(json_object(
                                'from', 'n' || (1 + k.g % 6),
                                'to', 'n' || (1 + (k.g * 5) % 6),
                                'protocol', '["HTTPS","gRPC","SQL","SMB","SFTP","AMQP"]' ->> ((random() & 2147483647) % 6),
                                'data', (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g * 37 + k.g) * 2654435761 + 26) % 190000 AND ((g * 37 + k.g) * 2654435761 + 26) % 190000 + (2) * 3 / 5)))
                     FROM temp.fx_n AS k WHERE k.g <= 8 + g % 10)),
       CASE WHEN g % 4 = 0 THEN NULL
            ELSE CAST(x'89504e470d0a1a0a' || randomblob(2048 + (g % 5) * 1024) AS BLOB) END,
       1 + g % 4,
       strftime('%Y-%m-%d %H:%M:%f+00:00', '2023-04-01', '+' || (((random() & 2147483647) % 34560000000) / 1000.0) || ' seconds'),
       CASE WHEN g % 2 = 0 THEN strftime('%Y-%m-%d %H:%M:%f+00:00', '2024-07-01', '+' || (((random() & 2147483647) % 7776000000) / 1000.0) || ' seconds') END
FROM temp.fx_n
WHERE g <= 3 * (SELECT n FROM temp.fixture_scale);

-- ---------------------------------------------------------------- threat_scenarios
INSERT INTO threat_scenarios (id, threat_model_id, related_risk_id, stride_category, title, description,
                              attack_vector, likelihood, impact, mitigations, tags, created_at)
SELECT g,
       1 + (g - 1) / 5,
       CASE WHEN g % 3 = 0 THEN NULL ELSE g END,
       '["spoofing","tampering","repudiation","information_disclosure","denial_of_service","elevation_of_privilege"]' ->> (g % 6),
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 27) % 190000 AND ((g) * 2654435761 + 27) % 190000 + (5) * 3 / 5),
       (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 28) % 190000 AND ((g) * 2654435761 + 28) % 190000 + (120 + (g % 9) * 15) * 3 / 5),
       CASE WHEN g % 5 = 0 THEN NULL ELSE (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g) * 2654435761 + 29) % 190000 AND ((g) * 2654435761 + 29) % 190000 + (25) * 3 / 5) END,
       '["very_low","low","medium","high","critical"]' ->> ((random() & 2147483647) % 5),
       '["very_low","low","medium","high","critical"]' ->> ((random() & 2147483647) % 5),
       (SELECT json_group_array(json_object(
                   'control', 'A.8.' || (1 + (g + m.g) % 34),
                   'status', '["planned","implemented","verified"]' ->> ((random() & 2147483647) % 3),
                   'note', (SELECT group_concat(t, ' ') FROM temp.fx_tok WHERE i BETWEEN 1 + ((g * 5 + m.g) * 2654435761 + 30) % 190000 AND ((g * 5 + m.g) * 2654435761 + 30) % 190000 + (8) * 3 / 5)))
        FROM temp.fx_n AS m WHERE m.g <= 1 + g % 4),
       CASE g % 5 WHEN 0 THEN '[]'
                  WHEN 1 THEN '["external","internet-facing"]'
                  WHEN 2 THEN '["insider","privileged","needs \"review\""]'
                  WHEN 3 THEN '["supply-chain","サプライチェーン"]'
                  ELSE '["ransomware",null,"tag with, comma"]' END,
       strftime('%Y-%m-%d %H:%M:%f+00:00', '2023-05-01', '+' || (((random() & 2147483647) % 38880000000) / 1000.0) || ' seconds')
FROM temp.fx_n
WHERE g <= 15 * (SELECT n FROM temp.fixture_scale);

DROP TABLE temp.fx_tok;
DROP TABLE temp.fx_n;
DROP TABLE temp.fx_phrase;
DROP TABLE temp.fx_vocab;

COMMIT;

ANALYZE;
