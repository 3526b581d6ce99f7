//! `GET /api/v1/reports/pipelines/{name}`: a pipeline's delivery figures over a date range —
//! Deployment Manager's report set and the DORA four (`drover report`, the portal's reports).

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Count, mean, median and maximum of a set of durations (seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub count: u32,
    pub avg_secs: Option<f64>,
    pub p50_secs: Option<f64>,
    pub max_secs: Option<f64>,
}

/// Deployments completed on one day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayCount {
    /// `2026-12-03`.
    pub day: String,
    pub completed: u32,
    pub failed: u32,
}

/// One completed deployment's lead time: its artifact pushed → the deployment completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadTime {
    pub deployment: i64,
    pub version: String,
    pub finished_at: Timestamp,
    pub secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub environment: String,
    /// From its first task's start to its last task's end, over the runs that went through it.
    pub time: Stat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTime {
    pub stage: String,
    /// 1-based, as pipelines and messages count tasks.
    pub task: usize,
    #[serde(rename = "type")]
    pub kind: String,
    pub time: Stat,
    /// Failed attempts (retried or not).
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineReport {
    pub pipeline: String,
    pub application: String,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Deployments started in the range, and how those that ended ended.
    pub deployments: u32,
    pub completed: u32,
    pub failed: u32,
    pub aborted: u32,
    /// Completed, then rolled back by a later deployment.
    pub rolled_back: u32,
    /// completed / (completed + failed + aborted).
    pub success_rate: Option<f64>,
    /// DORA: (failed + rolled back) / (completed + failed).
    pub change_failure_rate: Option<f64>,
    /// DORA deployment frequency: completed deployments per day of the range.
    pub per_day: Vec<DayCount>,
    pub deployments_per_day: Option<f64>,
    /// DORA lead time for changes: artifact pushed → deployment completed.
    pub lead_time: Stat,
    pub lead_times: Vec<LeadTime>,
    /// DORA time to restore: a failure (failed, or rolled back) → the next completed deployment.
    pub time_to_restore: Stat,
    pub stages: Vec<StageTime>,
    /// Tasks by failures, most first.
    pub tasks: Vec<TaskTime>,
    /// The range held more deployments than a report reads (the newest were read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The range of a report: `YYYY-MM-DD` (a whole day, UTC) or RFC 3339 for each end; the
/// defaults are the 30 days up to `now`.
/// A number of seconds in the unit a report reads best in: seconds under 2 minutes, minutes
/// under 2 hours, hours under 2 days, else days. `(value, "s" | "min" | "h" | "days")`.
pub fn readable_duration(secs: f64) -> (f64, &'static str) {
    match secs {
        s if s < 120.0 => (s, "s"),
        s if s < 7200.0 => (s / 60.0, "min"),
        s if s < 172_800.0 => (s / 3600.0, "h"),
        s => (s / 86_400.0, "days"),
    }
}

pub fn parse_range(from: Option<&str>, to: Option<&str>, now: Timestamp) -> Result<(Timestamp, Timestamp), String> {
    let parse = |s: &str, end: bool| -> Result<Timestamp, String> {
        let s = s.trim();
        let text = if s.len() == 10 {
            format!("{s}T{}", if end { "23:59:59.999Z" } else { "00:00:00Z" })
        } else {
            s.to_string()
        };
        let t = humantime::parse_rfc3339(&text)
            .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))?;
        let ms = t.duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis();
        Ok(Timestamp(ms as i64))
    };
    let to = match to.filter(|s| !s.trim().is_empty()) {
        Some(s) => parse(s, true)?,
        None => now,
    };
    let from = match from.filter(|s| !s.trim().is_empty()) {
        Some(s) => parse(s, false)?,
        None => Timestamp(to.0 - 30 * 86_400_000 + 1),
    };
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let (f, t) = parse_range(Some("2026-12-01"), Some("2026-12-02"), Timestamp(0)).unwrap();
        assert_eq!(f.to_string(), "2026-12-01T00:00:00.000Z");
        assert_eq!(t.to_string(), "2026-12-02T23:59:59.999Z");
        let now = Timestamp(1_800_000_000_000);
        let (f, t) = parse_range(None, None, now).unwrap();
        assert_eq!(t, now);
        assert_eq!(t.0 - f.0, 30 * 86_400_000 - 1);
        assert!(parse_range(Some("yesterday"), None, now).is_err());
    }
}
