//! `BACKUP_PING_URL`: a healthchecks.io-style dead-man's switch.
