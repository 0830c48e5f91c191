//! The observer that turns events into notices and delivers them from its
//! own task: bounded queue, timeout per attempt, retries with backoff,
//! counted results.
