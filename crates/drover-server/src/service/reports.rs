//! Reports: a pipeline's delivery figures over a date range (`drover_core::reports`). Reading
//! one needs `pipeline.read` on the pipeline's application; it reads at most
//! [`MAX_DEPLOYMENTS`] deployments of the range (the newest) and says when there were more.

use std::collections::HashMap;

use drover_core::rbac::Privilege;
use drover_core::store::DeploymentFilter;
use drover_core::{Error, Result};
use drover_types::Timestamp;
use drover_types::report::PipelineReport;

use super::Ctx;

/// Deployments one report reads at most.
pub const MAX_DEPLOYMENTS: usize = 2000;
/// Deployments listed per page, and pages a report walks at most (newest first).
const PAGE: usize = 500;
const MAX_PAGES: usize = 20;
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
    // Newest first, page by page, until the range's start, the cap, or MAX_PAGES pages (a
    // range long past does not walk the whole history).
    let mut ids = Vec::new();
    let mut before = None;
    let mut truncated = false;
    'pages: for n in 0..MAX_PAGES {
        let f =
            DeploymentFilter { pipeline: Some(p.name.clone()), limit: Some(PAGE as u32), before, ..Default::default() };
        let page = c.state.store.list_deployments(&f).await?;
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
        if page.len() < PAGE {
            break;
        }
        truncated = n + 1 == MAX_PAGES;
    }
    let mut deployments = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(st) = c.state.store.load_deployment(id).await? {
            deployments.push(st.to_view());
        }
    }
    // When each version was pushed, for lead times: only for callers who may see artifacts.
    let pushed: HashMap<String, Timestamp> = if c.sees(Privilege::ArtifactRead, &p.application) {
        c.state
            .store
            .list_artifacts(Some(&p.application))
            .await?
            .into_iter()
            .map(|a| (a.version, a.created_at))
            .collect()
    } else {
        HashMap::new()
    };
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
