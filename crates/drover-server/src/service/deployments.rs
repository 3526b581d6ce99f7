//! Deployments: application objects. Reading a deployment, its events and its log needs
//! `pipeline.read` on its application (else it does not exist for the caller); each action
//! needs its own privilege there. Approvals are decided by the machine (`drover_core::machine`)
//! from the roles the caller holds on the application and `approval.override`.

use drover_core::machine::ActionInput;
use drover_core::rbac::{Applications, Privilege};
use drover_core::store::DeploymentFilter;
use drover_core::{DeploymentState, Error, Result};
use drover_types::{Action, ActionRequest, Deployment, DeploymentEvent, DeploymentStatus, LogPage, NewDeployment};

use super::Ctx;
use super::environments::admits;
use crate::engine::Acting;

/// Deployments of one list answer that carry `waiting_for` (the newest that have not ended).
const ANNOTATED_IN_LISTS: usize = 100;

fn missing(id: i64) -> impl FnOnce() -> String {
    move || format!("deployment {id} not found")
}

/// The privilege an action needs on the deployment's application.
pub fn privilege_of(action: Action) -> Privilege {
    match action {
        Action::Abort => Privilege::DeploymentAbort,
        Action::Pause | Action::Resume => Privilege::DeploymentPause,
        Action::Retry => Privilege::DeploymentRetry,
        Action::Skip => Privilege::DeploymentSkip,
        Action::Approve | Action::Reject => Privilege::TaskApprove,
        Action::Promote => Privilege::DeploymentPromote,
        Action::Rollback => Privilege::DeploymentRollback,
    }
}

/// The actions the caller may take on the deployment now, for a page to offer: those its
/// status allows (the machine's rules), with the privilege on its application, and for an
/// approval the role it asks for (and not the starter's own approval where that is refused).
/// A hint only: every action is checked again when it is taken ([`act`]).
pub fn available_actions(c: &Ctx<'_>, d: &Deployment) -> Vec<Action> {
    let by_status = drover_core::machine::actions_in(d.status);
    let approval = d
        .stages
        .get(d.stage_index)
        .and_then(|st| st.tasks.iter().find(|t| t.status == drover_types::TaskStatus::PendingInput))
        .and_then(|t| match &t.spec {
            drover_types::TaskSpec::Approval { role, allow_self_approval, .. } => {
                Some((role.clone(), *allow_self_approval, t.approvals.clone()))
            }
            _ => None,
        });
    let me = c.label();
    let roles = c.caller.roles_on(&d.application);
    by_status
        .iter()
        .copied()
        .filter(|a| c.caller.can(privilege_of(*a), &d.application))
        .filter(|a| match (a, &approval) {
            (Action::Approve | Action::Reject, None) => false,
            (Action::Approve | Action::Reject, Some((role, self_ok, votes))) => {
                role.as_ref().is_none_or(|r| roles.contains(r))
                    && !(*a == Action::Approve && *self_ok == Some(false) && d.created_by == me)
                    && !(*a == Action::Approve && votes.iter().any(|v| v.by == me && !v.overridden))
            }
            _ => true,
        })
        .collect()
}

/// A deployment the caller may read, or "not found".
async fn visible(c: &Ctx<'_>, id: i64) -> Result<DeploymentState> {
    c.state
        .store
        .load_deployment(id)
        .await?
        .filter(|st| c.sees(Privilege::PipelineRead, &st.deployment.application))
        .ok_or_else(|| Error::NotFound(missing(id)()))
}

pub async fn start(c: &Ctx<'_>, req: NewDeployment) -> Result<Deployment> {
    let s = c.state;
    let p = s
        .store
        .get_pipeline(&req.pipeline)
        .await?
        .filter(|p| c.sees(Privilege::PipelineRead, &p.application))
        .ok_or_else(|| Error::NotFound(format!("pipeline {} not found", req.pipeline)))?;
    c.on_application(Privilege::DeploymentStart, Privilege::PipelineRead, &p.application, || {
        format!("pipeline {} not found", req.pipeline)
    })?;
    refuse_closed_environments(c, &p.application, &p.stages).await?;
    // The references as the starter may be told of them (the engine checks them again).
    super::pipelines::variables_resolve(c, &p.application, &p.variables, &p.stages).await?;
    Ok(s.engine.start(&req.pipeline, &req.version, &c.label(), None).await?.to_view())
}

/// The wire view, with `waiting_for`.
async fn view(c: &Ctx<'_>, st: &DeploymentState) -> Result<Deployment> {
    let mut v = st.to_view();
    super::waiting::annotate(c, st, &mut v).await?;
    Ok(v)
}

/// Deployments (a rollback is one) go only to environments that accept the application.
async fn refuse_closed_environments(c: &Ctx<'_>, app: &str, stages: &[drover_types::StageSpec]) -> Result<()> {
    for st in stages {
        if let Some(e) = c.state.store.get_environment(&st.environment).await?
            && !admits(&e, app)
        {
            return Err(Error::Forbidden(format!(
                "environment {} does not accept application {app}; ask an administrator",
                e.name
            )));
        }
    }
    Ok(())
}

pub async fn list(
    c: &Ctx<'_>,
    pipeline: Option<String>,
    status: Option<DeploymentStatus>,
    limit: Option<u32>,
    before: Option<i64>,
) -> Result<Vec<Deployment>> {
    let applications = match c.caller.applications_with(Privilege::PipelineRead) {
        Applications::All => None,
        Applications::Only(apps) => Some(apps),
    };
    let f = DeploymentFilter { pipeline, status, limit, applications, before };
    let list = c.state.store.list_deployments(&f).await?;
    let mut out = Vec::with_capacity(list.len());
    let mut facts = super::waiting::Facts::default();
    let mut annotated = 0;
    for d in list {
        let mut v = DeploymentState { deployment: d, tasks: Vec::new() }.to_view();
        // The newest that have not ended say why (from their full state); bounded per request.
        if !v.status.is_terminal()
            && annotated < ANNOTATED_IN_LISTS
            && let Some(st) = c.state.store.load_deployment(v.id).await?
        {
            annotated += 1;
            let mut full = st.to_view();
            super::waiting::annotate_with(c, &st, &mut full, &mut facts).await?;
            v.waiting_for = full.waiting_for;
        }
        out.push(v);
    }
    Ok(out)
}

pub async fn get(c: &Ctx<'_>, id: i64) -> Result<Deployment> {
    view(c, &visible(c, id).await?).await
}

pub async fn events(c: &Ctx<'_>, id: i64) -> Result<Vec<DeploymentEvent>> {
    visible(c, id).await?;
    c.state.store.events(id).await
}

pub async fn logs(c: &Ctx<'_>, id: i64, after: i64, limit: u32) -> Result<LogPage> {
    visible(c, id).await?;
    let lines = c.state.store.logs(id, after, limit.min(10_000)).await?;
    let next = lines.last().map(|l| l.id).unwrap_or(after);
    Ok(LogPage { lines, next })
}

/// May the caller follow this deployment's log (server-sent events)?
pub async fn may_follow(c: &Ctx<'_>, id: i64) -> Result<()> {
    visible(c, id).await.map(|_| ())
}

pub async fn act(c: &Ctx<'_>, id: i64, action: Action, req: ActionRequest) -> Result<Deployment> {
    let st = visible(c, id).await?;
    let app = st.deployment.application.clone();
    c.on_application(privilege_of(action), Privilege::PipelineRead, &app, missing(id))?;
    if req.override_approval && !c.caller.can(Privilege::ApprovalOverride, &app) {
        tracing::warn!(principal = %c.label(), deployment = id, "approval override refused");
        return Err(Error::Forbidden("overriding an approval needs the privilege approval.override".into()));
    }
    let who = Acting {
        name: c.label(),
        roles: c.caller.roles_on(&app),
        may_override: c.caller.can(Privilege::ApprovalOverride, &app),
    };
    let input = ActionInput { reason: req.reason.or(req.comment), override_approval: req.override_approval };
    view(c, &c.state.engine.act(id, action, &who, input).await?).await
}
