//! When backups run: a fixed interval, or a cron expression in a time zone.
//!
//! Expressions follow crontab: 5 fields (`m h dom mon dow`), optionally with a
//! leading seconds field (6) and a trailing year (7), or `@hourly`, `@daily`,
//! `@weekly`, `@monthly`, `@yearly`. Day-of-week numbers are crontab's in
//! every form (0 and 7 are Sunday, 1 is Monday); the `cron` crate counts
//! Sunday as 1, so numbers are translated to names. When both day-of-month
//! and day-of-week are restricted, a day matching either runs, as in cron(8).
//! A local time that does not exist on the day clocks go forward has no run
//! that day (the `cron` crate skips it); this is documented for operators.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone)]
pub enum Schedule {
    /// Runs every `Duration`, counted from the daemon's start.
    Interval(Duration),
    Cron(CronSchedule),
}

#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    tz: Tz,
    /// One schedule, or two whose union is the classic "dom OR dow" rule.
    parts: Vec<cron::Schedule>,
}

impl Schedule {
    /// The first run strictly after `after`. `None` only for a cron expression
    /// that never fires again (a past year).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Interval(every) => {
                Some(after + chrono::Duration::from_std(*every).unwrap_or(chrono::Duration::MAX))
            }
            Schedule::Cron(cron) => cron.next_after(after),
        }
    }

    /// The next `n` runs after `after`, for the start-up log.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut runs = Vec::with_capacity(n);
        let mut at = after;
        while runs.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    runs.push(next);
                    at = next;
                }
                None => break,
            }
        }
        runs
    }

    pub fn time_zone(&self) -> Tz {
        match self {
            Schedule::Interval(_) => Tz::UTC,
            Schedule::Cron(cron) => cron.tz,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Interval(every) => write!(f, "every {}s", every.as_secs()),
            Schedule::Cron(cron) => write!(f, "cron '{}' in {}", cron.expression, cron.tz),
        }
    }
}

impl CronSchedule {
    /// Parses `expression`, evaluated in `tz`. Errors name the field and the
    /// column where it starts, for an operator fixing an env file.
    pub fn parse(expression: &str, tz: Tz) -> Result<Self, String> {
        let expanded = expand_macro(expression.trim())?;
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 | 7 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "'{expression}' has {n} fields; expected 5 (minute hour day-of-month month day-of-week), 6 or 7 (with seconds first, year last), or @hourly/@daily/@weekly/@monthly/@yearly"
                ));
            }
        };
        let names = FIELD_NAMES;
        let offset = if fields.len() == 5 { 1 } else { 0 };
        let field_error = |index: usize, why: String| {
            let column = column_of(expression, index - offset);
            format!(
                "'{expression}': the {} field '{}' (column {column}) is invalid: {why}",
                names[index],
                fields[index - offset]
            )
        };
        let dow = translate_day_of_week(rest[4]).map_err(|why| field_error(5, why))?;
        let year = rest.get(5).copied();
        let assemble = |dom: &str, dow: &str| {
            let mut parts = vec![seconds, rest[0], rest[1], dom, rest[3], dow];
            parts.extend(year);
            parts.join(" ")
        };
        // Validate field by field, so the message can point at the culprit.
        let mut all_fields = vec![seconds, rest[0], rest[1], rest[2], rest[3], dow.as_str()];
        all_fields.extend(year);
        for (index, field) in all_fields.iter().enumerate() {
            let mut probe = vec!["*"; all_fields.len()];
            probe[0] = "0";
            probe[index] = field;
            // The crate's own message describes the probe, not the operator's
            // expression (and its bounds are off by one), so say what fits.
            if cron::Schedule::from_str(&probe.join(" ")).is_err() {
                return Err(field_error(
                    index,
                    format!(
                        "expected {} as a value, list (a,b), range (a-b) or step (*/n)",
                        FIELD_RANGES[index]
                    ),
                ));
            }
        }
        let restricted = |f: &str| f != "*" && f != "?";
        let sources = if restricted(rest[2]) && restricted(&dow) {
            vec![assemble(rest[2], "*"), assemble("*", &dow)]
        } else {
            vec![assemble(rest[2], &dow)]
        };
        let parts = sources
            .iter()
            .map(|s| {
                cron::Schedule::from_str(s).map_err(|e| format!("'{expression}' is invalid: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CronSchedule {
            expression: expression.trim().to_string(),
            tz,
            parts,
        })
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        self.parts
            .iter()
            .filter_map(|part| part.after(&local).next())
            .map(|t| t.with_timezone(&Utc))
            .min()
    }
}

const FIELD_RANGES: [&str; 7] = [
    "0-59",
    "0-59",
    "0-23",
    "1-31",
    "1-12 or JAN-DEC",
    "0-7 or SUN-SAT",
    "1970-2099",
];

const FIELD_NAMES: [&str; 7] = [
    "seconds",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
    "year",
];

fn column_of(expression: &str, field: usize) -> usize {
    let mut in_field = false;
    let mut seen = 0;
    for (i, c) in expression.char_indices() {
        if c.is_whitespace() {
            in_field = false;
        } else if !in_field {
            in_field = true;
            if seen == field {
                return i + 1;
            }
            seen += 1;
        }
    }
    1
}

fn expand_macro(expression: &str) -> Result<String, String> {
    if !expression.starts_with('@') {
        return Ok(expression.to_string());
    }
    Ok(match expression.to_ascii_lowercase().as_str() {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        _ => {
            return Err(format!(
                "'{expression}' is not a known shortcut; use @hourly, @daily, @weekly, @monthly or @yearly"
            ));
        }
    }
    .to_string())
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Crontab day-of-week (0-7, names, ranges, steps, lists) → a list of names.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let day = |s: &str| -> Result<u32, String> {
        if let Ok(n) = s.parse::<u32>() {
            return if n <= 7 {
                Ok(n % 7)
            } else {
                Err(format!("day {n} is out of range (0-7, 0 and 7 are Sunday)"))
            };
        }
        DAY_NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(s))
            .map(|i| i as u32)
            .ok_or_else(|| format!("'{s}' is not a day (0-7 or SUN-SAT)"))
    };
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("step '{step}' is not a number"))?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (base, step)
            }
            None => (item, 1),
        };
        let (first, last) = match base {
            "*" | "?" => (0, 6),
            _ => match base.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    // "5-7" (FRI-SUN) is written with 7 for Sunday.
                    let b = if b == 0 && a > 0 { 7 } else { b };
                    if a > b {
                        return Err(format!("range '{base}' runs backwards"));
                    }
                    (a, b)
                }
                None if step > 1 => (day(base)?, 6),
                None => {
                    let d = day(base)?;
                    (d, d)
                }
            },
        };
        days.extend((first..=last).step_by(step as usize).map(|d| d % 7));
    }
    Ok(days
        .into_iter()
        .map(|d| DAY_NAMES[d as usize])
        .collect::<Vec<_>>()
        .join(","))
}

/// Parses `TZ` (an IANA name such as `Europe/Berlin`); empty means UTC.
pub fn parse_time_zone(raw: &str) -> Result<Tz, String> {
    let name = raw.trim().trim_start_matches(':');
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>().map_err(|_| {
        format!("TZ '{name}' is not an IANA time zone name (for example UTC or Europe/Berlin)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn cron(expr: &str, tz: &str) -> Schedule {
        Schedule::Cron(CronSchedule::parse(expr, parse_time_zone(tz).unwrap()).unwrap())
    }

    #[test]
    fn intervals_count_from_the_previous_run() {
        let every = Schedule::Interval(Duration::from_secs(86_400));
        assert_eq!(
            every.next_after(utc(2026, 1, 1, 3, 0)),
            Some(utc(2026, 1, 2, 3, 0))
        );
        assert_eq!(every.upcoming(utc(2026, 1, 1, 0, 0), 3).len(), 3);
    }

    #[test]
    fn five_field_expressions_get_a_seconds_field() {
        let s = cron("0 */4 * * *", "UTC");
        assert_eq!(
            s.upcoming(utc(2026, 3, 1, 1, 30), 3),
            vec![
                utc(2026, 3, 1, 4, 0),
                utc(2026, 3, 1, 8, 0),
                utc(2026, 3, 1, 12, 0)
            ]
        );
        let with_seconds = cron("30 0 */4 * * *", "UTC");
        assert_eq!(
            with_seconds.next_after(utc(2026, 3, 1, 1, 30)),
            Some(utc(2026, 3, 1, 4, 0) + chrono::Duration::seconds(30))
        );
    }

    #[test]
    fn shortcuts_are_understood() {
        assert_eq!(
            cron("@hourly", "UTC").next_after(utc(2026, 3, 1, 1, 30)),
            Some(utc(2026, 3, 1, 2, 0))
        );
        assert_eq!(
            cron("@daily", "UTC").next_after(utc(2026, 3, 1, 1, 30)),
            Some(utc(2026, 3, 2, 0, 0))
        );
        // 2026-03-01 is a Sunday; @weekly runs on Sunday at midnight.
        assert_eq!(
            cron("@weekly", "UTC").next_after(utc(2026, 3, 1, 1, 30)),
            Some(utc(2026, 3, 8, 0, 0))
        );
    }

    #[test]
    fn crontab_day_numbers_mean_what_they_mean_in_crontab() {
        // 0 and 7 are Sunday, 1 is Monday. 2026-03-02 is a Monday.
        let after = utc(2026, 3, 1, 12, 0);
        assert_eq!(
            cron("0 3 * * 1", "UTC").next_after(after),
            Some(utc(2026, 3, 2, 3, 0))
        );
        assert_eq!(
            cron("0 3 * * 0", "UTC").next_after(after),
            Some(utc(2026, 3, 8, 3, 0))
        );
        assert_eq!(
            cron("0 3 * * 7", "UTC").next_after(after),
            Some(utc(2026, 3, 8, 3, 0))
        );
        assert_eq!(
            cron("0 3 * * 5-7", "UTC").next_after(after),
            Some(utc(2026, 3, 6, 3, 0))
        );
        assert_eq!(
            cron("0 3 * * MON-FRI", "UTC").next_after(utc(2026, 3, 6, 12, 0)),
            Some(utc(2026, 3, 9, 3, 0))
        );
        assert_eq!(translate_day_of_week("1-5/2").unwrap(), "MON,WED,FRI");
        assert_eq!(translate_day_of_week("*/2").unwrap(), "SUN,TUE,THU,SAT");
    }

    #[test]
    fn day_of_month_or_day_of_week_as_in_cron() {
        // The 1st of the month or any Monday: after Sunday 2026-03-01 noon the
        // next is Monday the 2nd, and after Monday 2026-03-30 the next is April 1st.
        let s = cron("0 0 1 * 1", "UTC");
        assert_eq!(
            s.next_after(utc(2026, 3, 1, 12, 0)),
            Some(utc(2026, 3, 2, 0, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 3, 30, 12, 0)),
            Some(utc(2026, 4, 1, 0, 0))
        );
    }

    #[test]
    fn times_are_local_to_the_time_zone_across_daylight_saving() {
        // Europe/Berlin moves from UTC+1 to UTC+2 on 2026-03-29 at 02:00 local.
        let s = cron("0 3 * * *", "Europe/Berlin");
        assert_eq!(
            s.upcoming(utc(2026, 3, 27, 12, 0), 3),
            vec![
                utc(2026, 3, 28, 2, 0),
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 30, 1, 0)
            ]
        );
        // America/New_York falls back on 2026-11-01: 03:00 EDT is 07:00 UTC, then 08:00 UTC.
        let ny = cron("0 3 * * *", "America/New_York");
        assert_eq!(
            ny.upcoming(utc(2026, 10, 31, 0, 0), 2),
            vec![utc(2026, 10, 31, 7, 0), utc(2026, 11, 1, 8, 0)]
        );
        // Asia/Tokyo has no DST: always 18:00 UTC for 03:00 local.
        assert_eq!(
            cron("0 3 * * *", "Asia/Tokyo").next_after(utc(2026, 3, 29, 0, 0)),
            Some(utc(2026, 3, 29, 18, 0))
        );
    }

    #[test]
    fn a_local_time_that_does_not_exist_is_skipped_that_day_only() {
        // 02:30 does not exist in Berlin on 2026-03-29 (clocks jump 02:00 → 03:00):
        // that day has no run, the next day runs as usual. Documented.
        let s = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            s.upcoming(utc(2026, 3, 28, 12, 0), 2),
            vec![utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
        );
    }

    #[test]
    fn errors_point_at_the_field() {
        let err = CronSchedule::parse("0 25 * * *", Tz::UTC).unwrap_err();
        assert!(err.contains("hour") && err.contains("column 3"), "{err}");
        let err = CronSchedule::parse("0 3 * * 9", Tz::UTC).unwrap_err();
        assert!(
            err.contains("day-of-week") && err.contains("column 9"),
            "{err}"
        );
        let err = CronSchedule::parse("* * *", Tz::UTC).unwrap_err();
        assert!(err.contains("3 fields"), "{err}");
        assert!(CronSchedule::parse("@sometimes", Tz::UTC).is_err());
        assert!(parse_time_zone("Mars/Olympus").is_err());
        assert_eq!(parse_time_zone("").unwrap(), Tz::UTC);
    }
}
