//! Reports: a pipeline's delivery figures over a date range (`drover_core::reports`). Reading
//! one needs `pipeline.read` on the pipeline's application; it reads at most
//! [`MAX_DEPLOYMENTS`] deployments of the range (the newest) and says when there were more.

use std::collections::HashMap;

use drover_core::{Error, Result};
use drover_types::Timestamp;
use drover_types::report::PipelineReport;

use super::Ctx;

/// Deployments one report reads at most.
pub const MAX_DEPLOYMENTS: usize = 2000;
/// The longest range a report covers.
pub const MAX_RANGE_DAYS: i64 = 366;

pub async fn pipeline(c: &Ctx<'_>, name: &str, from: Timestamp, to: Timestamp) -> Result<PipelineReport> {
    let p = super::pipelines::get(c, name).await?;
    if to < from {
        return Err(Error::BadRequest("the range ends before it starts".into()));
    }
    if to.0 - from.0 > MAX_RANGE_DAYS * 86_400_000 {
        return Err(Error::BadRequest(format!("a report covers at most {MAX_RANGE_DAYS} days")));
    }
    // Newest first, page by page, until the range's start (or the cap).
    let mut ids = Vec::new();
    let mut before = None;
    let mut truncated = false;
    'pages: loop {
        let page = super::deployments::list(c, Some(name.to_string()), None, Some(500), before).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        for d in &page {
            if d.created_at < from {
                break 'pages;
            }
            if d.created_at <= to {
                if ids.len() == MAX_DEPLOYMENTS {
                    truncated = true;
                    break 'pages;
                }
                ids.push(d.id);
            }
        }
        if page.len() < 500 {
            break;
        }
    }
    let mut deployments = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(st) = c.state.store.load_deployment(id).await? {
            deployments.push(st.to_view());
        }
    }
    // When each version was pushed (for lead times; the figures of a pipeline one may read).
    let pushed: HashMap<String, Timestamp> = c
        .state
        .store
        .list_artifacts(Some(&p.application))
        .await?
        .into_iter()
        .map(|a| (a.version, a.created_at))
        .collect();
    Ok(drover_core::reports::pipeline(&drover_core::reports::Input {
        pipeline: &p.name,
        application: &p.application,
        stages: &p.stages,
        deployments: &deployments,
        pushed: &pushed,
        from,
        to,
        truncated,
    }))
}
