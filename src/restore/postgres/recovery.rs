//! Crash recovery: after a restore was interrupted (backupd killed, the
//! server stopped), what is on the server now, and the swap record written
//! just before the swap, tell whether the restore had finished; a half-done
//! swap is put back and a leftover staging database dropped. Only names
//! this restore would have made are ever dropped or renamed.

use super::catalog::{Server, SwapRecord};
use super::naming::{check_stamp, ident, previous_name, staging_name};
use crate::db::PgTarget;
use crate::error::Result;
use crate::restore::Recovered;

/// Crash recovery after an interrupted run with `stamp`, told by what is on
/// the server now. With `swap` (recorded just before the swap):
/// - the live name carries the staging oid: the swap committed, the
///   restore had finished ([`Recovered::Finished`]);
/// - the live database is missing and the previous one exists: renamed
///   back ([`Recovered::NotRestored`]);
/// - otherwise the live database was not changed; a leftover staging
///   database is dropped ([`Recovered::NotRestored`]).
///
/// Without a record (killed before loading finished, or a state file of an
/// older version) the names decide: both renames happen in one
/// transaction, so the live database and `<db>_pre_restore_<stamp>` both
/// existing means the swap committed.
pub async fn recover(
    target: &PgTarget,
    stamp: &str,
    swap: Option<&SwapRecord>,
) -> Result<Recovered> {
    check_stamp(stamp)?;
    let server = Server::connect(target).await?;
    let db = server.db.clone();
    let db = db.as_str();
    let staging = staging_name(db, stamp);
    let previous = previous_name(db, stamp);
    // The state file is only ours to trust for names we would have made:
    // recovery drops and renames nothing else.
    let swap = swap.filter(|r| {
        let ours = r.staging == staging && r.previous == previous;
        if !ours {
            tracing::warn!(
                recorded_staging = %r.staging,
                recorded_previous = %r.previous,
                "the recorded swap names databases this restore would not have made; ignoring it"
            );
        }
        ours
    });
    let names = server.databases().await?;
    let live_oid = server.oid(db).await?;
    let previous_oid = if names.contains(&previous) {
        server.oid(&previous).await?
    } else {
        None
    };

    let mut done = Vec::new();
    let finished = match (live_oid, swap) {
        (Some(oid), Some(record)) => oid == record.staging_oid,
        (Some(_), None) => previous_oid.is_some(),
        (None, _) => false,
    };
    if live_oid.is_none() {
        if previous_oid.is_some() {
            let script = format!(
                "BEGIN;\n{}ALTER DATABASE {} RENAME TO {};\nCOMMIT;\n",
                server.terminate_sql(&previous),
                ident(&previous),
                ident(db)
            );
            server.sql(&script).await.map_err(|f| {
                server.fail(format!(
                    "database \"{db}\" is missing and \"{previous}\" could not be renamed back: {}",
                    f.summary()
                ))
            })?;
            tracing::warn!(database = db, from = %previous, "put the previous database back");
            done.push(format!("renamed \"{previous}\" back to \"{db}\""));
        } else {
            done.push(format!(
                "database \"{db}\" does not exist and there is no \"{previous}\" to put back"
            ));
        }
    }
    let rolled_back = !done.is_empty() && previous_oid.is_some() && live_oid.is_none();
    if finished {
        let kept = match (previous_oid, swap.and_then(|r| r.live_oid)) {
            (Some(now), Some(before)) if now == before => {
                format!("; the replaced database is kept as \"{previous}\"")
            }
            (Some(_), Some(_)) => format!(
                "; \"{previous}\" exists but is not the replaced database (its oid changed)"
            ),
            (Some(_), None) => format!("; the replaced database is kept as \"{previous}\""),
            (None, _) => String::new(),
        };
        done.push(format!(
            "the restore had finished before backupd stopped: \"{db}\" is the restored database{kept}; the state was completed by recovery"
        ));
    }
    if names.contains(&staging) {
        server.drop_if_exists(&staging, true).await.map_err(|f| {
            server.fail(format!(
                "cannot drop the leftover staging database \"{staging}\": {}",
                f.summary()
            ))
        })?;
        tracing::info!(database = %staging, "dropped the leftover staging database");
        done.push(format!(
            "dropped the leftover staging database \"{staging}\""
        ));
    }
    if finished {
        return Ok(Recovered::Finished(done.join("; ")));
    }
    if rolled_back {
        return Ok(Recovered::NotRestored(done.join("; ")));
    }
    if done.is_empty() {
        done.push(format!("nothing to recover: database \"{db}\" is in place"));
    } else if live_oid.is_some() {
        done.push(format!("the live database \"{db}\" was not changed"));
    }
    Ok(Recovered::NotRestored(done.join("; ")))
}
