-- Seed data for the assessment app fixture (PostgreSQL 15+).
--
-- Row counts scale linearly with the psql variable `scale` (default 1):
--   psql -v ON_ERROR_STOP=1 -v scale=100 -f schema.sql -f seed.sql
--
-- Per scale unit: 20 users, ~27 user_roles, 15 mfa_settings, 10 passkeys,
-- 3 scopes, 15 components, 30 consequences, 40 assessments, 20 risks,
-- 80 audit_log entries, 3 threat models, 15 threat scenarios.
-- Fixed: 7 roles, 93 controls.  Roughly 0.4 MB of database per scale unit.
--
-- random() is seeded (setseed), so a given scale gives the same data on
-- every run; except for now()-based defaults nothing depends on the clock.

\set ON_ERROR_STOP on
\if :{?scale}
\else
  \set scale 1
\endif
SELECT (:'scale' ~ '^[1-9][0-9]{0,6}$') AS fx_scale_ok \gset
\if :fx_scale_ok
\else
  \echo 'seed.sql: psql variable scale must be a positive integer, got:' :'scale'
  DO $$ BEGIN RAISE EXCEPTION 'invalid scale'; END $$;
\endif

SET client_min_messages = warning;
SET TimeZone = 'UTC';

BEGIN;

SELECT setseed(0.4242) AS fx_seed \gset

-- Helper functions live in pg_temp: they vanish with the session and never
-- end up in a dump.

-- n pseudo-random tokens (a word, or with p=0.3 a stock phrase) with some
-- punctuation and paragraph breaks.  Phrases make the text compress like
-- prose (gzip ~5x) rather than like a random word salad (~3x).
CREATE FUNCTION pg_temp.fx_words(n integer) RETURNS text
LANGUAGE sql VOLATILE AS $fn$
SELECT string_agg(
         CASE WHEN random() < 0.3 THEN v.p[1 + floor(random() * cardinality(v.p))::int]
              ELSE v.w[1 + floor(random() * cardinality(v.w))::int] END
         || CASE WHEN i % 83 = 0 THEN E'.\n\n' WHEN i % 11 = 0 THEN '.' WHEN i % 7 = 0 THEN ',' ELSE '' END,
         ' ')
FROM (SELECT '{access,account,accountability,acquisition,active,administrator,after,agreement,
  alert,analysis,and,anomaly,application,approval,archive,asset,assurance,attack,attacker,audit,
  authentication,authorization,availability,awareness,backup,baseline,before,behaviour,boundary,
  breach,budget,business,capacity,certificate,change,channel,classification,client,cloud,
  compliance,component,configuration,confidentiality,consequence,containment,continuity,contract,
  control,credential,critical,cryptography,customer,damage,dashboard,data,database,decision,
  dependency,deployment,detection,device,disaster,disclosure,document,domain,downtime,duty,
  effective,employee,encryption,endpoint,environment,escalation,evidence,exception,exposure,
  external,failure,finance,firewall,forensic,framework,function,governance,guideline,hardening,
  hazard,identity,impact,incident,information,infrastructure,integrity,interface,internal,
  inventory,isolation,key,laptop,latency,legal,level,likelihood,log,maintenance,malware,manager,
  measure,monitoring,network,objective,obligation,operation,outage,outsourcing,owner,partner,
  password,patch,payment,penalty,personnel,phishing,physical,policy,portal,privacy,privilege,
  procedure,process,processor,production,protection,provider,quarterly,ransomware,recovery,
  redundancy,regulation,regulator,release,remote,report,reputation,requirement,residual,
  resilience,resource,response,responsibility,restore,retention,review,risk,role,rotation,
  safeguard,scenario,schedule,scope,secret,segmentation,sensitive,server,service,session,
  severity,signature,staff,stakeholder,storage,supplier,supply,system,tampering,target,team,
  technical,test,third-party,threat,token,training,transfer,treatment,trust,unauthorized,update,
  user,validation,vendor,verification,vulnerability,weakness,workflow,workstation,the,the,the,
  of,of,of,to,to,a,a,in,in,is,is,for,for,with,on,by,be,are,must,should,may,not,this,that,each,
  within,without,between,during,across,when,where,which,all,any,only,also,however,therefore,
  annually,monthly,weekly,daily,immediately,documented,approved,reviewed,tested,implemented,
  planned,partially,fully,significant,limited,moderate,severe,minor,major,
  "two-factor",SSO,SAML,OIDC,TLS,VPN,SIEM,SOC,DPIA,GDPR,NIS2,DORA,ISO,RTO,RPO,MTD,API,
  Datenschutz,Sicherheitsvorfall,Überprüfung,Geschäftsprozess,sécurité,contrôle,évaluation,
  données,réseau,continuïteit,beveiliging,ångest,søknad,información,análisis,
  情報セキュリティ,リスク評価,事業継続,风险,数据,安全,보안,"정보 자산",
  أمن,المعلومات,مخاطر,סיכון,אבטחה,Безопасность,риск,ασφάλεια,κίνδυνος,
  "🔐","⚠️","✅","🚨","👩‍💻"}'::text[] AS w,
  '{"in accordance with the information security policy","the risk owner is responsible for",
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
  "password rotation is no longer required since passkeys were introduced",
  "the process depends on","shared service accounts are still in use",
  "the network is segmented into separate zones","according to the business continuity plan",
  "further analysis is required","the control is partially implemented",
  "no evidence could be provided","responsibilities are documented in the RACI matrix",
  "the contract does not include a right to audit","the data is classified as confidential",
  "the application is exposed to the internet","an external penetration test was performed",
  "there is a single point of failure in","the team lacks the capacity to",
  "as discussed in the steering committee","the residual risk is accepted by management",
  "a new assessment is planned for next quarter","the incident response plan was updated",
  "de verwerking van persoonsgegevens","die Verfügbarkeit des Dienstes ist kritisch",
  "la confidentialité des données de santé","事業への影響は限定的である","数据备份每天执行一次",
  "يجب مراجعة الصلاحيات كل ثلاثة أشهر","יש לבצע גיבוי יומי לכל המערכות",
  "доступ предоставляется по заявке","η διαθεσιμότητα της υπηρεσίας"}'::text[] AS p) AS v,
     generate_series(1, greatest(n, 1)) AS i
$fn$;

-- n pseudo-random (incompressible) bytes
CREATE FUNCTION pg_temp.fx_bytes(n integer) RETURNS bytea
LANGUAGE sql VOLATILE AS $fn$
SELECT substring(decode(string_agg(md5(random()::text), ''), 'hex') FROM 1 FOR n)
FROM generate_series(1, (greatest(n, 1) + 15) / 16)
$fn$;

-- pick one element of an array
CREATE FUNCTION pg_temp.fx_pick(a text[]) RETURNS text
LANGUAGE sql VOLATILE AS $fn$
SELECT a[1 + floor(random() * cardinality(a))::int]
$fn$;

CREATE FUNCTION pg_temp.fx_level() RETURNS risk_level
LANGUAGE sql VOLATILE AS $fn$
SELECT (enum_range(NULL::risk_level))[1 + floor(random() * 5)::int]
$fn$;

CREATE FUNCTION pg_temp.fx_status() RETURNS assessment_status
LANGUAGE sql VOLATILE AS $fn$
SELECT (enum_range(NULL::assessment_status))[1 + floor(random() * 4)::int]
$fn$;

CREATE FUNCTION pg_temp.fx_person() RETURNS text
LANGUAGE sql VOLATILE AS $fn$
SELECT pg_temp.fx_pick('{Anna,José,Zoë,Łukasz,Søren,Chloé,Mehmet,Ævar,Björn,Françoise,Jürgen,
         Siobhán,Nguyễn,美咲,Иван,Δημήτρης,محمد,שרה,Priya,Oluwaseun,Jan,Sanne,Pieter,Émilie,
         Ines,Kwame,Aroha,Mei,Lars,Fatima,Diego,Ngozi,Hiroshi,Ana,Tomáš,Ewa}'::text[])
       || ' ' ||
       pg_temp.fx_pick('{"de Vries",Müller,Ångström,Kowalski,"O''Brien","García Márquez",
         "van der Berg",Østergaard,Jansen,田中,王,Петров,Παπαδόπουλος,العلي,כהן,"Ní Bhriain",
         Smith,Dąbrowski,Nakamura,Okafor,Haddad,Svensson,Novák,Rossi,Bakker,Yılmaz,Nowak,Lefèvre}'::text[])
$fn$;

-- ---------------------------------------------------------------- roles
INSERT INTO roles (id, name, description, permissions, created_at) VALUES
  (1, 'admin',       'Full access, including user and backup management',
      '["users:*","roles:*","scopes:*","assessments:*","risks:*","audit:read","backup:*"]', '2022-01-03 08:00:00+00'),
  (2, 'assessor',    'Performs control self-assessments',
      '["scopes:read","assessments:write","risks:read"]', '2022-01-03 08:00:00+00'),
  (3, 'reviewer',    'Reviews and approves assessments',
      '["scopes:read","assessments:review","risks:write"]', '2022-01-03 08:00:00+00'),
  (4, 'risk_owner',  'Owns and treats risks in a scope',
      '["scopes:read","risks:write"]', '2022-01-03 08:00:00+00'),
  (5, 'viewer',      NULL, '["scopes:read"]', '2022-01-03 08:00:00+00'),
  (6, 'auditor',     'Read-only access including the audit log',
      '["scopes:read","assessments:read","risks:read","audit:read"]', '2022-02-14 09:30:00+01'),
  (7, 'référent-sécurité 🔐', 'Référent sécurité de l''entité — accès étendu aux analyses d''impact',
      '["scopes:*","assessments:review"]', '2023-06-01 12:00:00+02');

-- ---------------------------------------------------------------- users
INSERT INTO users (id, email, display_name, password_hash, locale, time_zone, is_active, is_admin,
                   failed_logins, preferences, last_login_at, created_at, updated_at)
SELECT g,
       CASE WHEN g % 37 = 0 THEN 'zoë.' || g || '@bücher.example'
            ELSE 'u' || g || '.' || substr(md5('mail' || g), 1, 6) || '@'
                 || pg_temp.fx_pick('{example.org,example.com,corp.example.net,assess.example}'::text[])
       END,
       pg_temp.fx_person() || CASE WHEN g % 50 = 0 THEN ' 👩‍💻' ELSE '' END,
       CASE WHEN g % 7 = 0 THEN NULL
            ELSE 'scrypt:32768:8:1$' || substr(md5('salt' || g), 1, 16) || '$'
                 || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
       END,
       pg_temp.fx_pick('{en,en,en,nl,de,fr,ja,ar,he,zh-Hans,pt-BR}'::text[]),
       pg_temp.fx_pick('{UTC,Europe/Amsterdam,Europe/Berlin,America/New_York,Asia/Tokyo,Asia/Jerusalem,Australia/Sydney}'::text[]),
       g % 23 <> 0,
       g % 10 = 1,
       (g % 5)::smallint,
       CASE WHEN g % 4 = 0 THEN NULL
            ELSE jsonb_build_object(
                   'theme', pg_temp.fx_pick('{light,dark,system}'::text[]),
                   'notifications', jsonb_build_object('email', g % 3 <> 0, 'digest',
                                      pg_temp.fx_pick('{daily,weekly,never}'::text[])),
                   'dashboard', jsonb_build_array('risks', 'assessments', CASE WHEN g % 2 = 0 THEN 'audit' END),
                   'signature', pg_temp.fx_words(8 + (g % 9)))
       END,
       CASE WHEN g % 6 = 0 THEN NULL
            ELSE timestamptz '2024-01-01 00:00:00+00' + random() * interval '400 days' END,
       timestamptz '2022-01-03 00:00:00+00' + random() * interval '700 days',
       CASE WHEN g % 3 = 0 THEN timestamptz '2024-06-01 00:00:00+00' + random() * interval '100 days' END
FROM generate_series(1, 20 * :scale) AS g;

-- ---------------------------------------------------------------- user_roles
INSERT INTO user_roles (user_id, role_id, granted_by, granted_at)
SELECT u.id, r.role_id, CASE WHEN u.id = 1 THEN NULL ELSE 1 END,
       u.created_at + interval '5 minutes'
FROM users u
CROSS JOIN LATERAL (
    SELECT 2 + (u.id % 5)::int AS role_id
    UNION ALL SELECT 1 WHERE u.id % 10 = 1
    UNION ALL SELECT 7 WHERE u.id % 4 = 0
) r;

-- ---------------------------------------------------------------- mfa_settings
INSERT INTO mfa_settings (user_id, totp_enabled, totp_secret_enc, recovery_codes,
                          enforced_by_policy, last_verified_at, created_at)
SELECT u.id,
       u.id % 3 <> 0,
       CASE WHEN u.id % 3 <> 0 OR u.id % 2 = 0
            THEN '\x80'::bytea || pg_temp.fx_bytes(71) END,
       CASE WHEN u.id % 3 <> 0 THEN
            (SELECT jsonb_agg(jsonb_build_object('h', encode(sha256(convert_to(u.id || ':' || c || random(), 'UTF8')), 'hex'),
                                                 'used', c % 4 = 0))
             FROM generate_series(1, 10) AS c)
       END,
       u.is_admin,
       CASE WHEN u.id % 3 <> 0 THEN u.created_at + random() * interval '300 days' END,
       u.created_at + interval '1 hour'
FROM users u
WHERE u.id % 4 <> 0;

-- ---------------------------------------------------------------- passkey_credentials
INSERT INTO passkey_credentials (id, user_id, credential_id, public_key, sign_count, aaguid,
                                 transports, nickname, backup_eligible, created_at, last_used_at)
OVERRIDING SYSTEM VALUE
SELECT g,
       1 + ((g * 3) % (20 * :scale)),
       decode(md5('cred:' || g) || md5('cred2:' || g), 'hex'),
       -- COSE_Key, EC2 / P-256: map header, x and y coordinates
       '\xa5010203262001215820'::bytea || pg_temp.fx_bytes(32) || '\x225820'::bytea || pg_temp.fx_bytes(32),
       CASE WHEN g % 5 = 0 THEN 0 ELSE floor(random() * 5000)::bigint END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE md5('aaguid' || (g % 6))::uuid END,
       CASE g % 4 WHEN 0 THEN '{internal,hybrid}'::text[]
                  WHEN 1 THEN '{usb,nfc}'::text[]
                  WHEN 2 THEN '{}'::text[]
                  ELSE NULL END,
       CASE g % 6 WHEN 0 THEN 'YubiKey 5 NFC 🔑'
                  WHEN 1 THEN 'iPhone von Jürgen'
                  WHEN 2 THEN 'MacBook Touch ID'
                  WHEN 3 THEN 'ノートPC (会社)'
                  WHEN 4 THEN NULL
                  ELSE 'مفتاح الأمان' END,
       g % 4 = 0,
       timestamptz '2023-03-01 00:00:00+00' + random() * interval '500 days',
       CASE WHEN g % 5 = 0 THEN NULL
            ELSE timestamptz '2024-09-01 00:00:00+00' + random() * interval '60 days' END
FROM generate_series(1, 10 * :scale) AS g;

-- ---------------------------------------------------------------- bia_context_scope
INSERT INTO bia_context_scope (id, name, responsible_user_id, security_manager, service_description,
                               knowledge, interfaces, mission_critical, support_contracts, status,
                               last_update, metadata, created_at, updated_at)
SELECT g,
       initcap(pg_temp.fx_words(3)) || ' — ' || pg_temp.fx_pick('{Payroll,CRM,"Patient portal",Webshop,
                 ERP,"Klantportaal","Système de facturation",人事システム,"Data warehouse",HR}'::text[]) || ' #' || g,
       CASE WHEN g % 9 = 0 THEN NULL ELSE 1 + ((g * 7) % (20 * :scale)) END,
       pg_temp.fx_person(),
       pg_temp.fx_words(200 + (g % 5) * 40),
       CASE WHEN g % 10 = 1 THEN pg_temp.fx_words(2000 + (g % 3) * 1000)      -- ~35-70 KB
            WHEN g % 5 = 3 THEN NULL
            ELSE pg_temp.fx_words(60 + (g % 7) * 15) END,
       pg_temp.fx_words(60),
       pg_temp.fx_words(30),
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'Contract ' || upper(substr(md5('c' || g), 1, 8)) || E':\n' || pg_temp.fx_words(40) END,
       pg_temp.fx_status(),
       date '2023-01-01' + (g % 600),
       jsonb_build_object(
           'department', pg_temp.fx_pick('{Finance,IT,HR,Legal,Operations,Sales,"Recherche & Développement"}'::text[]),
           'cia', jsonb_build_object('c', 1 + g % 4, 'i', 1 + (g / 2) % 4, 'a', 1 + (g / 3) % 4),
           'tags', jsonb_build_array(pg_temp.fx_pick('{gdpr,nis2,dora,pci,sox,hipaa}'::text[]), 'scope-' || g),
           'note', CASE WHEN g % 2 = 0 THEN '情報資産の棚卸しは四半期ごとに実施' ELSE NULL END),
       timestamptz '2022-03-01 00:00:00+00' + random() * interval '600 days',
       CASE WHEN g % 3 = 0 THEN NULL ELSE timestamptz '2024-05-01 00:00:00+00' + random() * interval '150 days' END
FROM generate_series(1, 3 * :scale) AS g;

-- ---------------------------------------------------------------- bia_components
INSERT INTO bia_components (id, context_scope_id, name, info_type, info_owner, user_type,
                            process_dependencies, description, rto_hours, rpo_hours, mtd_hours)
SELECT g,
       1 + (g - 1) / 5,
       pg_temp.fx_pick('{"Customer database","Payment gateway","File share","Mail server","Identity provider",
                         "Reporting cube",Webserver,"Backup vault",Laptop-fleet,"Zeiterfassung",Boîte-mail}'::text[]) || ' ' || g,
       pg_temp.fx_pick('{"Personal data","Financial records","Source code","Health data (GDPR art. 9)",
                         "Operational telemetry",Contracts,"Données clients",個人情報}'::text[]),
       pg_temp.fx_person(),
       pg_temp.fx_pick('{internal,external,customers,partners,"internal + external"}'::text[]),
       pg_temp.fx_words(15 + g % 20),
       CASE WHEN g % 8 = 0 THEN NULL ELSE pg_temp.fx_words(40 + (g % 9) * 10) END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE (ARRAY[1, 4, 8, 24, 72, 168])[1 + g % 6] END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE (ARRAY[0, 1, 4, 24])[1 + g % 4] END,
       round((random() * 500)::numeric, 2)
FROM generate_series(1, 15 * :scale) AS g;

-- ---------------------------------------------------------------- bia_consequences
INSERT INTO bia_consequences (id, component_id, category, security_property, consequence_worstcase,
                              justification_worstcase, consequence_realisticcase,
                              justification_realisticcase, financial_impact_eur)
SELECT g,
       1 + (g - 1) / 2,
       (ARRAY['financial', 'operational', 'regulatory', 'reputational', 'safety', 'privacy'])[1 + g % 6],
       (ARRAY['confidentiality', 'integrity', 'availability'])[1 + (g / 6) % 3],
       pg_temp.fx_level(),
       pg_temp.fx_words(30 + g % 40),
       CASE WHEN g % 7 = 0 THEN NULL ELSE pg_temp.fx_level() END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE pg_temp.fx_words(20 + g % 30) END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE round((random() * 2500000)::numeric, 2) END
FROM generate_series(1, 30 * :scale) AS g;

-- ---------------------------------------------------------------- csa_controls (fixed catalogue)
INSERT INTO csa_controls (id, code, domain, title, description, guidance)
SELECT row_number() OVER (ORDER BY d.ord, n)::smallint,
       'A.' || d.chapter || '.' || n,
       d.domain,
       'Control ' || d.chapter || '.' || n || ': ' || initcap(pg_temp.fx_words(3 + n % 4)),
       pg_temp.fx_words(10 + n % 15),
       CASE WHEN n % 3 = 0 THEN NULL ELSE pg_temp.fx_words(20 + n % 30) END
FROM (VALUES (1, 5, 'organizational', 37), (2, 6, 'people', 8),
             (3, 7, 'physical', 14), (4, 8, 'technological', 34)) AS d(ord, chapter, domain, cnt)
CROSS JOIN LATERAL generate_series(1, d.cnt) AS n
ORDER BY d.ord, n;

-- ---------------------------------------------------------------- csa_assessments
INSERT INTO csa_assessments (id, control_id, context_scope_id, assessor_id, status, maturity, answers,
                             evidence, started_at, submitted_at, reviewed_at)
SELECT g, t.control_id, t.scope_id, t.assessor_id, t.status, t.maturity,
       jsonb_build_object(
           'version', 2,
           'questions', (SELECT jsonb_agg(jsonb_build_object(
                                  'q', q,
                                  'answer', pg_temp.fx_pick('{yes,no,partial,n/a}'::text[]),
                                  'comment', CASE WHEN (g + q) % 3 = 0 THEN NULL ELSE pg_temp.fx_words(6 + q) END))
                         FROM generate_series(1, 3 + g % 4) AS q),
           'score', t.maturity,
           'attachments', CASE WHEN g % 5 = 0
                               THEN jsonb_build_array('evidence-' || g || '.pdf', 'screenshot ' || g || '.png')
                               ELSE '[]'::jsonb END),
       CASE WHEN g % 4 = 0 THEN NULL ELSE pg_temp.fx_words(20 + g % 40) END,
       t.started_at,
       CASE WHEN t.status <> 'draft' THEN t.started_at + random() * interval '20 days' END,
       CASE WHEN t.status IN ('approved', 'archived') THEN t.started_at + interval '21 days' + random() * interval '10 days' END
FROM generate_series(1, 40 * :scale) AS g
CROSS JOIN LATERAL (
    SELECT (1 + g % 93)::smallint                                         AS control_id,
           (1 + g % (3 * :scale))::int                                      AS scope_id,
           CASE WHEN g % 11 = 0 THEN NULL ELSE 1 + ((g * 13) % (20 * :scale)) END AS assessor_id,
           pg_temp.fx_status()                                              AS status,
           CASE WHEN g % 9 = 0 THEN NULL ELSE (g % 6)::smallint END         AS maturity,
           timestamptz '2023-01-01 00:00:00+00' + random() * interval '600 days' AS started_at
) AS t;

-- ---------------------------------------------------------------- risk_items
INSERT INTO risk_items (id, context_scope_id, assessment_id, owner_id, title, description, likelihood,
                        impact, level, treatment, residual_level, due_date, closed_at, created_at)
SELECT g,
       1 + g % (3 * :scale),
       CASE WHEN g % 3 = 0 THEN NULL ELSE 2 * g END,
       CASE WHEN g % 8 = 0 THEN NULL ELSE 1 + ((g * 11) % (20 * :scale)) END,
       initcap(pg_temp.fx_words(5 + g % 4)),
       pg_temp.fx_words(80 + g % 80),
       t.l, t.i,
       CASE WHEN t.l * t.i >= 20 THEN 'critical' WHEN t.l * t.i >= 12 THEN 'high'
            WHEN t.l * t.i >= 6 THEN 'medium' WHEN t.l * t.i >= 3 THEN 'low'
            ELSE 'very_low' END::risk_level,
       (ARRAY['accept', 'mitigate', 'mitigate', 'transfer', 'avoid'])[1 + g % 5],
       CASE WHEN g % 4 = 0 THEN NULL ELSE pg_temp.fx_level() END,
       date '2024-01-01' + (g * 7) % 700,
       CASE WHEN g % 6 = 0 THEN timestamptz '2024-02-01 00:00:00+00' + random() * interval '200 days' END,
       timestamptz '2023-02-01 00:00:00+00' + random() * interval '500 days'
FROM generate_series(1, 20 * :scale) AS g
CROSS JOIN LATERAL (SELECT (1 + g % 5)::smallint AS l, (1 + (g / 5) % 5)::smallint AS i) AS t;

-- ---------------------------------------------------------------- audit_log
-- ids come from audit_log_id_seq (starts at 100000)
INSERT INTO audit_log (occurred_at, actor_id, action, entity_type, entity_id, ip_address, user_agent,
                       payload, message)
SELECT timestamptz '2023-01-01 00:00:00+00' + (g::float8 / (80 * :scale)) * interval '730 days',
       CASE WHEN g % 10 = 0 THEN NULL ELSE 1 + ((g * 17) % (20 * :scale)) END,
       a.action,
       a.entity_type,
       CASE WHEN a.entity_type IS NULL THEN NULL ELSE 1 + g % (3 * :scale) END,
       CASE WHEN g % 13 = 0 THEN NULL
            WHEN g % 5 = 0 THEN ('2001:db8:' || to_hex(g % 65536) || '::' || to_hex(g % 4093 + 1))::inet
            ELSE ('10.' || (g / 65536) % 256 || '.' || (g / 256) % 256 || '.' || g % 256)::inet END,
       CASE WHEN g % 13 = 0 THEN NULL
            ELSE pg_temp.fx_pick('{"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
              "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
              "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
              "python-requests/2.32.3","curl/8.8.0","backupd/0.1"}'::text[]) END,
       jsonb_build_object(
           'request_id', md5('req' || g)::uuid,
           'method', CASE WHEN a.action LIKE '%update' OR a.action LIKE '%create' THEN 'POST' ELSE 'GET' END,
           'route', '/' || coalesce(a.entity_type, 'auth') || '/' || (g % 1000),
           'status', (ARRAY[200, 200, 200, 302, 401, 403, 500])[1 + g % 7],
           'duration_ms', round((random() * 900)::numeric, 3),
           'changes', CASE WHEN a.action LIKE '%update' THEN jsonb_build_object(
                            'field', pg_temp.fx_pick('{description,status,owner,likelihood,justification}'::text[]),
                            'old', pg_temp.fx_words(5 + g % 40),
                            'new', pg_temp.fx_words(5 + g % 45)) END),
       CASE WHEN g % 97 = 0 THEN
                 E'multi-line entry\nwith\ttabs, a back\\slash, "double" and ''single'' quotes\n\\.\n'
                 || E'(the line above is a lone backslash-dot) \\N is not NULL\r\nend'
            WHEN g % 89 = 0 THEN ''
            WHEN g % 83 = 0 THEN E'\\N'
            WHEN g % 31 = 0 THEN 'تم تحديث تقييم المخاطر — הערכת הסיכונים עודכנה — 风险评估已更新 ✅'
            WHEN g % 3 = 0 THEN NULL
            ELSE pg_temp.fx_words(10 + g % 50) END
FROM generate_series(1, 80 * :scale) AS g
CROSS JOIN LATERAL (
    SELECT (ARRAY['login', 'logout', 'login_failed', 'mfa.verified', 'passkey.registered',
                  'assessment.update', 'risk.create', 'risk.update', 'scope.export', 'user.role_granted',
                  'backup.download', 'settings.update'])[1 + (g * 7) % 12] AS action,
           (ARRAY[NULL, NULL, NULL, NULL, 'passkey', 'assessment', 'risk', 'risk', 'scope', 'user',
                  NULL, 'settings'])[1 + (g * 7) % 12] AS entity_type
) AS a
ORDER BY g;

-- ---------------------------------------------------------------- threat_models
INSERT INTO threat_models (id, context_scope_id, owner_id, title, methodology, description, dfd,
                           diagram_png, version, created_at, updated_at)
SELECT g,
       CASE WHEN g % 5 = 0 THEN NULL ELSE g END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE 1 + ((g * 5) % (20 * :scale)) END,
       'Threat model: ' || initcap(pg_temp.fx_words(4)),
       (ARRAY['STRIDE', 'STRIDE', 'LINDDUN', 'PASTA', 'attack_tree'])[1 + g % 5],
       pg_temp.fx_words(150 + g % 100),
       jsonb_build_object(
           'nodes', (SELECT jsonb_agg(jsonb_build_object('id', 'n' || k, 'label', initcap(pg_temp.fx_words(2)),
                                                         'type', pg_temp.fx_pick('{process,datastore,external,trust_boundary}'::text[]),
                                                         'zone', 1 + k % 3))
                     FROM generate_series(1, 6 + g % 8) AS k),
           'flows', (SELECT jsonb_agg(jsonb_build_object('from', 'n' || (1 + k % 6), 'to', 'n' || (1 + (k * 5) % 6),
                                                         'protocol', pg_temp.fx_pick('{HTTPS,gRPC,SQL,SMB,SFTP,AMQP}'::text[]),
                                                         'data', pg_temp.fx_words(3)))
                     FROM generate_series(1, 8 + g % 10) AS k)),
       CASE WHEN g % 4 = 0 THEN NULL
            ELSE '\x89504e470d0a1a0a'::bytea || pg_temp.fx_bytes(2048 + (g % 5) * 1024) END,
       1 + g % 4,
       timestamptz '2023-04-01 00:00:00+00' + random() * interval '400 days',
       CASE WHEN g % 2 = 0 THEN timestamptz '2024-07-01 00:00:00+00' + random() * interval '90 days' END
FROM generate_series(1, 3 * :scale) AS g;

-- ---------------------------------------------------------------- threat_scenarios
INSERT INTO threat_scenarios (id, threat_model_id, related_risk_id, stride_category, title, description,
                              attack_vector, likelihood, impact, mitigations, tags, created_at)
SELECT g,
       1 + (g - 1) / 5,
       CASE WHEN g % 3 = 0 THEN NULL ELSE g END,
       (ARRAY['spoofing', 'tampering', 'repudiation', 'information_disclosure', 'denial_of_service',
              'elevation_of_privilege'])[1 + g % 6],
       initcap(pg_temp.fx_words(6)),
       pg_temp.fx_words(120 + (g % 9) * 15),
       CASE WHEN g % 5 = 0 THEN NULL ELSE pg_temp.fx_words(25) END,
       pg_temp.fx_level(),
       pg_temp.fx_level(),
       (SELECT jsonb_agg(jsonb_build_object('control', 'A.8.' || (1 + (g + m) % 34),
                                            'status', pg_temp.fx_pick('{planned,implemented,verified}'::text[]),
                                            'note', pg_temp.fx_words(8)))
        FROM generate_series(1, 1 + g % 4) AS m),
       CASE g % 5 WHEN 0 THEN '{}'::text[]
                  WHEN 1 THEN ARRAY['external', 'internet-facing']
                  WHEN 2 THEN ARRAY['insider', 'privileged', 'needs "review"']
                  WHEN 3 THEN ARRAY['supply-chain', 'サプライチェーン']
                  ELSE ARRAY['ransomware', NULL, 'tag with, comma'] END,
       timestamptz '2023-05-01 00:00:00+00' + random() * interval '450 days'
FROM generate_series(1, 15 * :scale) AS g;

-- ---------------------------------------------------------------- sequences
-- explicit ids were inserted above: move every sequence past them, so the
-- application (and a restored dump) can keep inserting.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['roles', 'users', 'passkey_credentials', 'bia_context_scope',
                             'bia_components', 'bia_consequences', 'csa_controls', 'csa_assessments',
                             'risk_items', 'audit_log', 'threat_models', 'threat_scenarios']
    LOOP
        EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, ''id''), coalesce(max(id), 0) + 1, false) FROM %I',
                       t, t);
    END LOOP;
END
$$;

COMMIT;

-- only our tables: a plain ANALYZE by a non-superuser warns about every
-- shared catalog
ANALYZE roles, users, user_roles, mfa_settings, passkey_credentials, bia_context_scope,
        bia_components, bia_consequences, csa_controls, csa_assessments, risk_items,
        audit_log, threat_models, threat_scenarios;
