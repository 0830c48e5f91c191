//! The time source, behind a trait so names, retention and (later) schedules
//! can be tested at fixed instants.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The later of `clock`'s time and the system's. Retention and the offsite pass
/// use it to tell a planted name stamped in the future: a name after both
/// times cannot be one we wrote, whatever instant a test's clock is fixed at.
pub fn not_before_system_time(clock: &dyn Clock) -> DateTime<Utc> {
    clock.now().max(Utc::now())
}
