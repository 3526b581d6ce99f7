//! A pipeline's delivery figures (`drover_types::report`), computed from its deployments and
//! the push times of their artifacts: pure, so that every figure is tested with fixed times.

use std::collections::{BTreeMap, HashMap};

use drover_types::report::{DayCount, LeadTime, PipelineReport, StageTime, Stat, TaskTime};
use drover_types::{Deployment, DeploymentStatus as D, TaskStatus as T, Timestamp};

fn stat(mut v: Vec<f64>) -> Stat {
    if v.is_empty() {
        return Stat::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let p50 = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Stat {
        count: n as u32,
        avg_secs: Some(v.iter().sum::<f64>() / n as f64),
        p50_secs: Some(p50),
        max_secs: v.last().copied(),
    }
}

fn secs(from: Timestamp, to: Timestamp) -> f64 {
    (to.0 - from.0).max(0) as f64 / 1000.0
}

fn day(t: Timestamp) -> String {
    t.to_string().get(..10).unwrap_or_default().to_string()
}

/// What a report needs of the pipeline.
pub struct Input<'a> {
    pub pipeline: &'a str,
    pub application: &'a str,
    pub stages: &'a [drover_types::StageSpec],
    /// Full views (stages and tasks) of the deployments started in the range.
    pub deployments: &'a [Deployment],
    /// When each version of the application was pushed.
    pub pushed: &'a HashMap<String, Timestamp>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub truncated: bool,
}

pub fn pipeline(i: &Input<'_>) -> PipelineReport {
    let mut ds: Vec<&Deployment> = i.deployments.iter().filter(|d| d.rollback_of.is_none()).collect();
    ds.sort_by_key(|d| d.created_at);
    let rolled_back: std::collections::HashSet<i64> = i.deployments.iter().filter_map(|d| d.rollback_of).collect();
    let count = |s: D| ds.iter().filter(|d| d.status == s).count() as u32;
    let (completed, failed, aborted) = (count(D::Completed), count(D::Failed), count(D::Aborted));
    // A change failure is one in the last stage (production), or a completed change rolled back.
    let last = i.stages.len().saturating_sub(1);
    let failed_last = ds.iter().filter(|d| d.status == D::Failed && d.stage_index >= last).count() as u32;
    let rolled = ds.iter().filter(|d| d.status == D::Completed && rolled_back.contains(&d.id)).count() as u32;
    let ended = completed + failed + aborted;
    let ratio = |a: u32, b: u32| (b > 0).then(|| a as f64 / b as f64);

    // Frequency: per day of the range, completed and failed.
    let mut per_day: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut t = i.from;
    while t <= i.to && per_day.len() < 400 {
        per_day.insert(day(t), (0, 0));
        t = t.plus(std::time::Duration::from_secs(86_400));
    }
    per_day.entry(day(i.to)).or_default();
    for d in &ds {
        let (Some(end), true) = (d.finished_at, matches!(d.status, D::Completed | D::Failed)) else { continue };
        // Started in the range, ended after it: not a day of this report.
        let Some(e) = per_day.get_mut(&day(end)) else { continue };
        if d.status == D::Completed { e.0 += 1 } else { e.1 += 1 }
    }
    let days = per_day.len().max(1) as f64;

    // Lead time: pushed → completed.
    let lead_times: Vec<LeadTime> = ds
        .iter()
        .filter(|d| d.status == D::Completed)
        .filter_map(|d| {
            let (pushed, end) = (i.pushed.get(&d.version)?, d.finished_at?);
            Some(LeadTime { deployment: d.id, version: d.version.clone(), finished_at: end, secs: secs(*pushed, end) })
        })
        .collect();

    // Time to restore: from the first failure of an incident (a production failure, or a change
    // later rolled back) to the next completed deployment, a rollback included; one figure per
    // incident, however many failures it saw.
    let mut events: Vec<(Timestamp, bool)> = Vec::new();
    for d in i.deployments {
        let Some(end) = d.finished_at else { continue };
        let rolled = rolled_back.contains(&d.id);
        if (d.status == D::Failed && d.stage_index >= last) || (d.status == D::Completed && rolled) {
            events.push((end, false));
        } else if d.status == D::Completed {
            events.push((end, true));
        }
    }
    events.sort_by_key(|e| e.0);
    let mut restores = Vec::new();
    let mut failing_since: Option<Timestamp> = None;
    for (t, good) in events {
        match (good, failing_since) {
            (false, None) => failing_since = Some(t),
            (true, Some(since)) => {
                restores.push(secs(since, t));
                failing_since = None;
            }
            _ => {}
        }
    }

    // Stages and tasks.
    // By stage name (a run of an older shape of the pipeline counts where its stage still is).
    let mut stage_times: Vec<Vec<f64>> = vec![Vec::new(); i.stages.len()];
    let mut task_times: BTreeMap<(usize, usize), (String, Vec<f64>, u32)> = BTreeMap::new();
    for d in &ds {
        for st in &d.stages {
            let Some(si) = i.stages.iter().position(|s| s.name == st.name) else { continue };
            let start = st.tasks.iter().filter_map(|t| t.started_at).min();
            let end = st.tasks.iter().filter_map(|t| t.finished_at).max();
            let done = !st.tasks.is_empty() && st.tasks.iter().all(|t| t.status.is_passed());
            if let (Some(a), Some(b), true, Some(v)) = (start, end, done, stage_times.get_mut(si)) {
                v.push(secs(a, b));
            }
            for t in &st.tasks {
                let e = task_times.entry((si, t.index)).or_insert_with(|| (t.kind.clone(), Vec::new(), 0));
                if let (Some(a), Some(b), T::Completed) = (t.started_at, t.finished_at, t.status) {
                    e.1.push(secs(a, b));
                }
                let failed_now = matches!(t.status, T::Failed | T::Rejected) as u32;
                let retried = if t.status.is_passed() || failed_now == 1 { t.attempt.saturating_sub(1) } else { 0 };
                e.2 += failed_now + retried;
            }
        }
    }
    let stages = i
        .stages
        .iter()
        .zip(stage_times)
        .map(|(s, v)| StageTime { stage: s.name.clone(), environment: s.environment.clone(), time: stat(v) })
        .collect();
    let mut tasks: Vec<TaskTime> = task_times
        .into_iter()
        .map(|((si, ti), (kind, v, failures))| TaskTime {
            stage: i.stages.get(si).map(|s| s.name.clone()).unwrap_or_default(),
            task: ti + 1,
            kind,
            time: stat(v),
            failures,
        })
        .collect();
    tasks.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.stage.cmp(&b.stage)).then(a.task.cmp(&b.task)));

    PipelineReport {
        pipeline: i.pipeline.to_string(),
        application: i.application.to_string(),
        from: i.from,
        to: i.to,
        deployments: ds.len() as u32,
        completed,
        failed,
        aborted,
        rolled_back: rolled,
        success_rate: ratio(completed, ended),
        change_failure_rate: ratio(failed_last + rolled, completed + failed_last),
        deployments_per_day: Some(completed as f64 / days),
        per_day: per_day.into_iter().map(|(day, (completed, failed))| DayCount { day, completed, failed }).collect(),
        lead_time: stat(lead_times.iter().map(|l| l.secs).collect()),
        lead_times,
        time_to_restore: stat(restores),
        stages,
        tasks,
        truncated: i.truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_types::{Progression, StageRun, StageSpec, TaskRun, TaskSpec};

    const H: i64 = 3_600_000;

    fn task(index: usize, status: T, start: i64, end: i64, attempt: u32) -> TaskRun {
        TaskRun {
            index,
            kind: "run".into(),
            spec: TaskSpec::Wait { duration: drover_types::DurationSpec(std::time::Duration::from_secs(1)) },
            status,
            attempt,
            attempt_id: None,
            agent: None,
            started_at: Some(Timestamp(start)),
            finished_at: Some(Timestamp(end)),
            exit_code: None,
            message: None,
            decided_by: None,
            comment: None,
            approvals: vec![],
            waiting_for: None,
            targets: vec![],
            batch: None,
        }
    }

    fn dep(id: i64, version: &str, status: D, created: i64, end: i64, tasks: Vec<TaskRun>) -> Deployment {
        Deployment {
            id,
            pipeline: "shop".into(),
            application: "shop".into(),
            version: version.into(),
            status,
            stage_index: 0,
            message: None,
            created_by: "ann".into(),
            created_at: Timestamp(created),
            updated_at: Timestamp(end),
            finished_at: Some(Timestamp(end)),
            rollback_of: None,
            waiting_for: None,
            stages: vec![StageRun {
                name: "prod".into(),
                environment: "production".into(),
                progression: Progression::Automatic,
                status: String::new(),
                targets: Default::default(),
                failed_agents: vec![],
                tasks,
            }],
        }
    }

    #[test]
    fn the_dora_four_and_the_time_per_stage_and_task() {
        let day0 = 1_764_547_200_000; // 2025-12-01T00:00:00Z
        let stages = vec![StageSpec { name: "prod".into(), environment: "production".into(), ..Default::default() }];
        let ds = vec![
            // 1.0 pushed at day0, completed at +2 h (tasks 1 h each).
            dep(1, "1.0", D::Completed, day0 + H, day0 + 2 * H, vec![task(0, T::Completed, day0 + H, day0 + 2 * H, 1)]),
            // 1.1 fails at +5 h after a retry; 1.2 completes at +7 h: restored in 2 h.
            dep(
                2,
                "1.1",
                D::Failed,
                day0 + 4 * H,
                day0 + 5 * H,
                vec![task(0, T::Failed, day0 + 4 * H, day0 + 5 * H, 2)],
            ),
            dep(
                3,
                "1.2",
                D::Completed,
                day0 + 6 * H,
                day0 + 7 * H,
                vec![task(0, T::Completed, day0 + 6 * H, day0 + 7 * H, 1)],
            ),
            dep(
                4,
                "1.3",
                D::Aborted,
                day0 + 8 * H,
                day0 + 9 * H,
                vec![task(0, T::Aborted, day0 + 8 * H, day0 + 9 * H, 1)],
            ),
        ];
        let pushed: HashMap<String, Timestamp> = [("1.0", day0), ("1.1", day0 + 3 * H), ("1.2", day0 + 3 * H)]
            .map(|(v, t)| (v.to_string(), Timestamp(t)))
            .into();
        let r = pipeline(&Input {
            pipeline: "shop",
            application: "shop",
            stages: &stages,
            deployments: &ds,
            pushed: &pushed,
            from: Timestamp(day0),
            to: Timestamp(day0 + 2 * 24 * H - 1),
            truncated: false,
        });
        assert_eq!((r.deployments, r.completed, r.failed, r.aborted, r.rolled_back), (4, 2, 1, 1, 0));
        assert_eq!(r.success_rate, Some(0.5));
        assert_eq!(r.change_failure_rate, Some(1.0 / 3.0));
        assert_eq!(r.per_day.len(), 2);
        assert_eq!((r.per_day[0].completed, r.per_day[0].failed), (2, 1));
        assert_eq!(r.deployments_per_day, Some(1.0), "2 completed over 2 days");
        // Lead times 2 h (1.0) and 4 h (1.2).
        assert_eq!(r.lead_time.count, 2);
        assert_eq!(r.lead_time.avg_secs, Some(3.0 * 3600.0));
        assert_eq!(r.lead_time.max_secs, Some(4.0 * 3600.0));
        assert_eq!(r.time_to_restore.p50_secs, Some(2.0 * 3600.0));
        assert_eq!(r.stages[0].time.count, 2, "only runs that went through the stage");
        assert_eq!(r.stages[0].time.avg_secs, Some(3600.0));
        assert_eq!(r.tasks[0].failures, 2, "one retried attempt and the final failure");
        // A rollback of 1.2 makes it a failure too.
        let mut with_rollback = ds.clone();
        let mut rb = dep(5, "1.0", D::Completed, day0 + 10 * H, day0 + 11 * H, vec![]);
        rb.rollback_of = Some(3);
        with_rollback.push(rb);
        let r = pipeline(&Input {
            pipeline: "shop",
            application: "shop",
            stages: &stages,
            deployments: &with_rollback,
            pushed: &pushed,
            from: Timestamp(day0),
            to: Timestamp(day0 + 2 * 24 * H - 1),
            truncated: false,
        });
        assert_eq!(r.rolled_back, 1);
        assert_eq!(r.change_failure_rate, Some(2.0 / 3.0));
        // One incident (1.1 failed at +5 h, 1.2 rolled back) until the rollback completed (+11 h).
        assert_eq!(r.time_to_restore.count, 1);
        assert_eq!(r.time_to_restore.p50_secs, Some(6.0 * 3600.0));
        assert_eq!(r.deployments, 4, "the rollback itself is not counted as a deployment");
    }
}
