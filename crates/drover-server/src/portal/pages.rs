//! The portal's pages: thin like the API's handlers (extract, call the service layer as the
//! signed-in operator, render a template), plus the view models the templates read.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use drover_core::rbac::Privilege;
use drover_core::store::AuditFilter;
use drover_types::{Action, ActionRequest, Deployment, DeploymentStatus, NewDeployment, TaskRun, TaskSpec, Timestamp};
use serde::Deserialize;

use super::{Viewer, assets, render, service_error};
use crate::AppState;
use crate::service::{self, deployments};

/// Pipelines per dashboard page; deployments per pipeline page.
pub const PIPELINES_PER_PAGE: usize = 25;
pub const DEPLOYMENTS_PER_PAGE: u32 = 50;
/// Log lines a deployment page shows (the API and `drover logs` have them all).
pub const LOG_LINES: u32 = 2000;

/// What every signed-in page shows around its content.
pub struct Chrome {
    pub title: String,
    pub operator: String,
    pub csrf: String,
    pub css: &'static str,
    pub js: &'static str,
    /// The navigation shows what the operator may open.
    pub audit: bool,
    pub artifacts: bool,
    pub clients: bool,
    pub keys: bool,
    pub operators: bool,
    pub access: bool,
    pub profiles: bool,
    pub system: bool,
    pub new_pipeline: bool,
}

pub(crate) fn chrome(v: &Viewer, title: impl Into<String>) -> Chrome {
    let p = &v.principal;
    Chrome {
        title: title.into(),
        operator: v.session.operator.clone(),
        csrf: v.session.csrf.clone(),
        css: assets::css(),
        js: assets::js(),
        audit: p.holds_globally(Privilege::AuditRead),
        artifacts: p.may_call(Privilege::ArtifactRead),
        clients: p.holds_globally(Privilege::ClientManage),
        keys: p.holds_globally(Privilege::KeystoreManage),
        operators: p.holds_globally(Privilege::OperatorManage),
        access: p.holds_globally(Privilege::RoleManage),
        profiles: p.holds_globally(Privilege::AuthProfileManage),
        system: p.holds_globally(Privilege::SystemObserve),
        new_pipeline: p.may_call(Privilege::PipelineManage),
    }
}

/// `2026-12-03 11:30:05` (UTC).
pub fn when(t: Timestamp) -> String {
    let s = t.to_string();
    s.get(..19).map(|x| x.replace('T', " ")).unwrap_or(s)
}

fn when_opt(t: Option<Timestamp>) -> String {
    t.map(when).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "portal/error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub status: u16,
    pub css: &'static str,
}

#[derive(Template)]
#[template(path = "portal/signed_out.html")]
pub struct SignedOut {
    pub css: &'static str,
}

/// A deployment in a list or a column.
pub struct Card {
    pub id: i64,
    pub pipeline: String,
    pub version: String,
    pub status: &'static str,
    pub stage: String,
    pub waiting: String,
    pub message: String,
    pub created_by: String,
    pub updated: String,
}

fn card(d: &Deployment, stage_names: &[String]) -> Card {
    Card {
        id: d.id,
        pipeline: d.pipeline.clone(),
        version: d.version.clone(),
        status: d.status.as_str(),
        stage: stage_names.get(d.stage_index).cloned().unwrap_or_default(),
        waiting: d.waiting_for.as_ref().map(|w| w.sentence.clone()).unwrap_or_default(),
        message: d.message.clone().unwrap_or_default(),
        created_by: d.created_by.clone(),
        updated: when(d.updated_at),
    }
}

pub struct StageCell {
    pub stage: String,
    pub environment: String,
    pub last: Option<Card>,
    /// The last deployment went past this stage.
    pub passed: bool,
}

pub struct PipelineRow {
    pub name: String,
    pub application: String,
    pub stages: Vec<StageCell>,
}

pub struct Waiting {
    pub card: Card,
    pub actions: Vec<&'static str>,
}

#[derive(Template)]
#[template(path = "portal/dashboard.html")]
pub struct Dashboard {
    pub chrome: Chrome,
    pub pipelines: Vec<PipelineRow>,
    pub waiting: Vec<Waiting>,
    pub page: usize,
    pub pages: usize,
    pub total: usize,
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    page: Option<usize>,
}

/// `GET /portal/`: pipelines with the last deployment per stage; what waits for this operator.
pub async fn dashboard(v: Viewer, Query(q): Query<PageQuery>) -> Response {
    let c = v.ctx();
    let all = match service::pipelines::list(&c).await {
        Ok(p) => p,
        Err(e) => return service_error(e),
    };
    let total = all.len();
    let pages = total.div_ceil(PIPELINES_PER_PAGE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let mut rows = Vec::new();
    for p in all.iter().skip((page - 1) * PIPELINES_PER_PAGE).take(PIPELINES_PER_PAGE) {
        let recent = match deployments::list(&c, Some(p.name.clone()), None, Some(20), None).await {
            Ok(d) => d,
            Err(e) => return service_error(e),
        };
        let names: Vec<String> = p.stages.iter().map(|s| s.name.clone()).collect();
        let stages = p
            .stages
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let last = recent.iter().find(|d| d.stage_index >= i);
                StageCell {
                    stage: st.name.clone(),
                    environment: st.environment.clone(),
                    passed: last.is_some_and(|d| d.stage_index > i),
                    last: last.map(|d| card(d, &names)),
                }
            })
            .collect();
        rows.push(PipelineRow { name: p.name.clone(), application: p.application.clone(), stages });
    }
    let waiting = match waiting_for_me(&v).await {
        Ok(w) => w,
        Err(e) => return service_error(e),
    };
    render(StatusCode::OK, &Dashboard { chrome: chrome(&v, "Dashboard"), pipelines: rows, waiting, page, pages, total })
}

/// Approvals and promotions this operator may act on now (the newest 20 of each).
async fn waiting_for_me(v: &Viewer) -> drover_core::Result<Vec<Waiting>> {
    let c = v.ctx();
    let mut out = Vec::new();
    for status in [DeploymentStatus::PendingInput, DeploymentStatus::PendingPromotion] {
        for d in deployments::list(&c, None, Some(status), Some(20), None).await? {
            let full = deployments::get(&c, d.id).await?;
            let actions: Vec<&'static str> = deployments::available_actions(&c, &full)
                .into_iter()
                .filter(|a| matches!(a, Action::Approve | Action::Reject | Action::Promote))
                .map(|a| a.as_str())
                .collect();
            if !actions.is_empty() {
                let names: Vec<String> = full.stages.iter().map(|s| s.name.clone()).collect();
                out.push(Waiting { card: card(&full, &names), actions });
            }
        }
    }
    out.sort_by_key(|w| std::cmp::Reverse(w.card.id));
    Ok(out)
}

pub struct Column {
    pub stage: String,
    pub environment: String,
    pub progression: &'static str,
    pub cards: Vec<Card>,
}

#[derive(Template)]
#[template(path = "portal/pipeline.html")]
pub struct PipelinePage {
    pub chrome: Chrome,
    pub name: String,
    pub application: String,
    pub columns: Vec<Column>,
    pub done: Vec<Card>,
    pub may_start: bool,
    pub may_edit: bool,
    pub versions: Vec<String>,
    pub older: Option<i64>,
}

#[derive(Deserialize, Default)]
pub struct BeforeQuery {
    before: Option<i64>,
}

/// `GET /portal/pipelines/{name}`: stages as columns, deployments in the column of their stage.
pub async fn pipeline(v: Viewer, Path(name): Path<String>, Query(q): Query<BeforeQuery>) -> Response {
    let c = v.ctx();
    let p = match service::pipelines::get(&c, &name).await {
        Ok(p) => p,
        Err(e) => return service_error(e),
    };
    let list = match deployments::list(&c, Some(name.clone()), None, Some(DEPLOYMENTS_PER_PAGE), q.before).await {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
    let names: Vec<String> = p.stages.iter().map(|s| s.name.clone()).collect();
    let mut columns: Vec<Column> = p
        .stages
        .iter()
        .map(|s| Column {
            stage: s.name.clone(),
            environment: s.environment.clone(),
            progression: match s.progression {
                drover_types::Progression::Automatic => "automatic",
                drover_types::Progression::Manual => "manual",
            },
            cards: Vec::new(),
        })
        .collect();
    let mut done = Vec::new();
    for d in &list {
        if d.status == DeploymentStatus::Completed {
            done.push(card(d, &names));
        } else if let Some(col) = columns.get_mut(d.stage_index) {
            col.cards.push(card(d, &names));
        }
    }
    let may_start = v.principal.can(Privilege::DeploymentStart, &p.application);
    let versions = if may_start && v.principal.can(Privilege::ArtifactRead, &p.application) {
        match service::artifacts::list(&c, Some(&p.application)).await {
            Ok(mut a) => {
                a.sort_by_key(|x| std::cmp::Reverse(x.created_at));
                a.into_iter().take(50).map(|x| x.version).collect()
            }
            Err(drover_core::Error::Forbidden(_)) => Vec::new(),
            Err(e) => return service_error(e),
        }
    } else {
        Vec::new()
    };
    let older = (list.len() as u32 == DEPLOYMENTS_PER_PAGE).then(|| list.last().map(|d| d.id)).flatten();
    let may_edit = v.principal.can(Privilege::PipelineManage, &p.application);
    let page = PipelinePage {
        chrome: chrome(&v, format!("Pipeline {name}")),
        name: p.name,
        application: p.application,
        columns,
        done,
        may_start,
        may_edit,
        versions,
        older,
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct StartForm {
    version: String,
}

/// `POST /portal/pipelines/{name}/start`.
pub async fn start(v: Viewer, Path(name): Path<String>, Form(f): Form<StartForm>) -> Response {
    let req = NewDeployment { pipeline: name, version: f.version.trim().to_string() };
    match deployments::start(&v.ctx(), req).await {
        Ok(d) => Redirect::to(&format!("/portal/deployments/{}", d.id)).into_response(),
        Err(e) => service_error(e),
    }
}

/// One task on the timeline (a fleet task has one per agent in `targets`).
pub struct TaskRow {
    pub label: String,
    pub kind: &'static str,
    pub status: &'static str,
    pub agent: String,
    pub batch: String,
    pub attempt: u32,
    pub started: String,
    pub finished: String,
    pub message: String,
    pub decided: String,
    pub waiting: String,
    pub targets: Vec<TaskRow>,
}

fn task_row(t: &TaskRun) -> TaskRow {
    let label = match &t.spec {
        TaskSpec::Run { command, .. } => match command {
            drover_types::CommandSpec::Shell(s) => s.clone(),
            drover_types::CommandSpec::Exec(v) => v.join(" "),
        },
        TaskSpec::HttpCheck { url, .. } | TaskSpec::Webhook { url, .. } => url.clone(),
        TaskSpec::Approval { role, .. } => role.as_ref().map(|r| format!("approval by {r}")).unwrap_or_default(),
        TaskSpec::Wait { duration } => format!("wait {duration}"),
        TaskSpec::Deploy {} => "deploy the artifact".into(),
    };
    let mut decided: Vec<String> = t
        .approvals
        .iter()
        .map(|a| {
            let c = a.comment.as_deref().map(|c| format!(": “{c}”")).unwrap_or_default();
            format!("{} {}d at {}{c}", a.by, a.decision, when(a.at))
        })
        .collect();
    if decided.is_empty()
        && let Some(by) = &t.decided_by
    {
        let c = t.comment.as_deref().map(|c| format!(": “{c}”")).unwrap_or_default();
        decided.push(format!("{} by {by}{c}", t.status));
    }
    TaskRow {
        label,
        kind: t.spec.kind(),
        status: t.status.as_str(),
        agent: t.agent.clone().unwrap_or_default(),
        batch: t.batch.map(|b| b.to_string()).unwrap_or_default(),
        attempt: t.attempt,
        started: when_opt(t.started_at),
        finished: when_opt(t.finished_at),
        message: t.message.clone().unwrap_or_default(),
        decided: decided.join("; "),
        waiting: t.waiting_for.as_ref().map(|w| w.sentence.clone()).unwrap_or_default(),
        targets: t.targets.iter().map(task_row).collect(),
    }
}

pub struct StageBlock {
    pub name: String,
    pub environment: String,
    pub status: String,
    pub targets: &'static str,
    pub current: bool,
    pub tasks: Vec<TaskRow>,
}

pub struct EventRow {
    pub at: String,
    pub actor: String,
    pub kind: String,
    pub detail: String,
}

pub struct ActionForm {
    pub action: &'static str,
    pub label: &'static str,
    /// The text field the action takes, if any (`reason`, `comment`).
    pub field: &'static str,
    pub danger: bool,
}

fn action_form(a: Action) -> ActionForm {
    let (label, field, danger) = match a {
        Action::Abort => ("Abort", "reason", true),
        Action::Pause => ("Pause", "", false),
        Action::Resume => ("Resume", "", false),
        Action::Retry => ("Retry", "", false),
        Action::Skip => ("Skip", "reason", false),
        Action::Approve => ("Approve", "comment", false),
        Action::Reject => ("Reject", "comment", true),
        Action::Promote => ("Promote", "", false),
        Action::Rollback => ("Roll back", "reason", true),
    };
    ActionForm { action: a.as_str(), label, field, danger }
}

#[derive(Template)]
#[template(path = "portal/deployment.html")]
pub struct DeploymentPage {
    pub chrome: Chrome,
    pub live: Live,
    pub log: Vec<String>,
    /// The log has more lines than the page shows.
    pub log_cut: bool,
    pub log_after: i64,
    pub terminal: bool,
    /// What the page shows (the script skips events that show nothing new).
    pub key: String,
}

/// The part of the deployment page that live updates replace.
#[derive(Template)]
#[template(path = "portal/deployment_live.html")]
pub struct Live {
    pub id: i64,
    pub csrf: String,
    pub card: Card,
    pub rollback_of: Option<i64>,
    pub created: String,
    pub finished: String,
    pub stages: Vec<StageBlock>,
    pub actions: Vec<ActionForm>,
    pub events: Vec<EventRow>,
}

#[derive(Deserialize, Default)]
pub struct FragmentQuery {
    fragment: Option<u8>,
}

async fn live_part(v: &Viewer, id: i64) -> drover_core::Result<(Live, Deployment)> {
    let c = v.ctx();
    let d = deployments::get(&c, id).await?;
    let events = deployments::events(&c, id).await?;
    let names: Vec<String> = d.stages.iter().map(|s| s.name.clone()).collect();
    let stages = d
        .stages
        .iter()
        .enumerate()
        .map(|(i, st)| StageBlock {
            name: st.name.clone(),
            environment: st.environment.clone(),
            status: st.status.clone(),
            targets: match st.targets {
                drover_types::Targets::One => "",
                drover_types::Targets::All => "every agent",
                drover_types::Targets::Rolling => "rolling",
            },
            current: i == d.stage_index && !d.status.is_terminal(),
            tasks: st.tasks.iter().map(task_row).collect(),
        })
        .collect();
    let events = events
        .iter()
        .rev()
        .take(200)
        .map(|e| EventRow {
            at: when(e.ts),
            actor: e.actor.clone(),
            kind: e.kind.clone(),
            detail: if e.detail.is_null() { String::new() } else { e.detail.to_string() },
        })
        .collect();
    let live = Live {
        id,
        csrf: v.session.csrf.clone(),
        card: card(&d, &names),
        rollback_of: d.rollback_of,
        created: when(d.created_at),
        finished: when_opt(d.finished_at),
        stages,
        actions: deployments::available_actions(&c, &d).into_iter().map(action_form).collect(),
        events,
    };
    Ok((live, d))
}

/// `GET /portal/deployments/{id}` (`?fragment=1`: only the part live updates replace).
pub async fn deployment(v: Viewer, Path(id): Path<i64>, Query(q): Query<FragmentQuery>) -> Response {
    let (live, d) = match live_part(&v, id).await {
        Ok(x) => x,
        Err(e) => return service_error(e),
    };
    if q.fragment == Some(1) {
        return render(StatusCode::OK, &live);
    }
    let page = match deployments::logs(&v.ctx(), id, 0, LOG_LINES).await {
        Ok(p) => p,
        Err(e) => return service_error(e),
    };
    let log: Vec<String> = page.lines.iter().map(|l| l.line.clone()).collect();
    let log_cut = log.len() >= LOG_LINES as usize;
    let page = DeploymentPage {
        chrome: chrome(&v, format!("Deployment {id}")),
        live,
        log,
        log_cut,
        log_after: page.next,
        terminal: d.status.is_terminal(),
        key: format!("{}|{}", d.updated_at, d.waiting_for.as_ref().map(|w| w.sentence.as_str()).unwrap_or("")),
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize, Default)]
pub struct AfterQuery {
    after: Option<i64>,
}

/// `GET /portal/deployments/{id}/live`: server-sent events (log lines, changes, the end). A
/// reconnecting browser resumes after its `Last-Event-ID`; the stream ends with the session.
pub async fn live(
    State(s): State<AppState>,
    headers: HeaderMap,
    v: Viewer,
    Path(id): Path<i64>,
    Query(q): Query<AfterQuery>,
) -> Response {
    if let Err(e) = deployments::may_follow(&v.ctx(), id).await {
        return service_error(e);
    }
    let resumed = headers.get("last-event-id").and_then(|h| h.to_str().ok()).and_then(|h| h.parse::<i64>().ok());
    let after = q.after.unwrap_or(0).max(resumed.unwrap_or(0));
    // Checked every few seconds: the session (not as activity), and the operator's right to
    // read this deployment as of now.
    let (state, sid) = (s.clone(), v.session.id.clone());
    let recheck: crate::sse::Recheck = std::sync::Arc::new(move || {
        let (state, sid) = (state.clone(), sid.clone());
        Box::pin(async move {
            match super::session::check(&state, &sid).await {
                super::session::Loaded::Active(_, p) => {
                    !matches!(deployments::may_follow(&crate::service::Ctx::new(&state, &p), id).await, Err(e) if !matches!(e, drover_core::Error::Unavailable(_)))
                }
                super::session::Loaded::Ended(_) => false,
                super::session::Loaded::Unavailable => true,
            }
        })
    });
    crate::sse::follow_while(s, v.principal, id, after, Some(recheck))
}

#[derive(Deserialize, Default)]
pub struct ActionFields {
    reason: Option<String>,
    comment: Option<String>,
}

async fn act(v: Viewer, id: i64, action: Action, f: ActionFields) -> Response {
    let nonempty = |x: Option<String>| x.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let req = ActionRequest { reason: nonempty(f.reason), comment: nonempty(f.comment), override_approval: false };
    match deployments::act(&v.ctx(), id, action, req).await {
        Ok(d) => Redirect::to(&format!("/portal/deployments/{}", d.id)).into_response(),
        Err(e) => service_error(e),
    }
}

macro_rules! action_page {
    ($($name:ident => $action:ident),+ $(,)?) => {$(
        pub async fn $name(v: Viewer, Path(id): Path<i64>, Form(f): Form<ActionFields>) -> Response {
            act(v, id, Action::$action, f).await
        }
    )+};
}

action_page!(
    abort => Abort, pause => Pause, resume => Resume, retry => Retry, skip => Skip,
    approve => Approve, reject => Reject, promote => Promote, rollback => Rollback,
);

pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub principal: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub source: String,
}

#[derive(Template)]
#[template(path = "portal/audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub principal: String,
    pub action: String,
    pub outcome: String,
    pub outcomes: Vec<(&'static str, bool)>,
    pub rows: Vec<AuditRow>,
    pub older: Option<i64>,
    pub verified: Option<drover_types::audit::AuditVerification>,
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    principal: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    before: Option<i64>,
    verify: Option<u8>,
}

const AUDIT_PER_PAGE: u32 = 50;

/// `GET /portal/audit`: filters, paging (older), the chain's verification on request.
pub async fn audit(v: Viewer, Query(q): Query<AuditQuery>) -> Response {
    let c = v.ctx();
    let clean = |x: &Option<String>| x.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let f = AuditFilter {
        principal: clean(&q.principal),
        action: clean(&q.action),
        outcome: clean(&q.outcome),
        before: q.before,
        limit: Some(AUDIT_PER_PAGE),
    };
    let entries = match service::audit::list(&c, f).await {
        Ok(e) => e,
        Err(e) => return service_error(e),
    };
    let verified = if q.verify == Some(1) {
        match service::audit::verify(&c).await {
            Ok(v) => Some(v),
            Err(e) => return service_error(e),
        }
    } else {
        None
    };
    let older = (entries.len() as u32 == AUDIT_PER_PAGE).then(|| entries.last().map(|e| e.seq)).flatten();
    let rows = entries
        .into_iter()
        .map(|e| AuditRow {
            seq: e.seq,
            at: when(e.entry.ts),
            principal: e.entry.principal,
            action: e.entry.action,
            target: e.entry.target,
            outcome: e.entry.outcome,
            source: e.entry.source,
        })
        .collect();
    let page = AuditPage {
        chrome: chrome(&v, "Audit log"),
        principal: clean(&q.principal).unwrap_or_default(),
        action: clean(&q.action).unwrap_or_default(),
        outcome: clean(&q.outcome).unwrap_or_default(),
        outcomes: ["started", "success", "failure", "denied"]
            .into_iter()
            .map(|o| (o, q.outcome.as_deref() == Some(o)))
            .collect(),
        rows,
        older,
        verified,
    };
    render(StatusCode::OK, &page)
}

fn hours(s: Option<f64>) -> String {
    match s.map(drover_types::report::readable_duration) {
        None => "—".into(),
        Some((v, "s")) => format!("{v:.0} s"),
        Some((v, unit)) => format!("{v:.1} {unit}"),
    }
}

fn percent(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0} %", r * 100.0)).unwrap_or_else(|| "—".into())
}

pub struct Figure {
    pub name: &'static str,
    pub value: String,
    pub note: String,
}

pub struct TaskFigure {
    pub task: String,
    pub failures: u32,
    pub avg: String,
    pub runs: u32,
}

#[derive(Template)]
#[template(path = "portal/reports.html")]
pub struct ReportsPage {
    pub chrome: Chrome,
    pub name: String,
    pub from: String,
    pub to: String,
    pub figures: Vec<Figure>,
    pub charts: Vec<String>,
    pub stages: Vec<(String, String, String, u32)>,
    pub tasks: Vec<TaskFigure>,
    pub truncated: bool,
}

#[derive(Deserialize, Default)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /portal/pipelines/{name}/reports`: the pipeline's figures over a range, with charts.
pub async fn reports(v: Viewer, Path(name): Path<String>, Query(q): Query<RangeQuery>) -> Response {
    let range = drover_types::report::parse_range(q.from.as_deref(), q.to.as_deref(), Timestamp::now());
    let (from, to) = match range {
        Ok(r) => r,
        Err(e) => return service_error(drover_core::Error::BadRequest(e)),
    };
    let r = match service::reports::pipeline(&v.ctx(), &name, from, to).await {
        Ok(r) => r,
        Err(e) => return service_error(e),
    };
    let day = |t: Timestamp| t.to_string().get(..10).unwrap_or_default().to_string();
    let figures = vec![
        Figure {
            name: "Deployment frequency",
            value: format!("{:.2} a day", r.deployments_per_day.unwrap_or(0.0)),
            note: format!("{} completed of {} started", r.completed, r.deployments),
        },
        Figure {
            name: "Lead time for changes",
            value: hours(r.lead_time.p50_secs),
            note: format!("median, artifact pushed → completed; mean {}", hours(r.lead_time.avg_secs)),
        },
        Figure {
            name: "Change failure rate",
            value: percent(r.change_failure_rate),
            note: format!("{} failed, {} rolled back", r.failed, r.rolled_back),
        },
        Figure {
            name: "Time to restore",
            value: hours(r.time_to_restore.p50_secs),
            note: format!("median over {} failures followed by a completed deployment", r.time_to_restore.count),
        },
        Figure { name: "Success rate", value: percent(r.success_rate), note: format!("{} aborted", r.aborted) },
    ];
    let days: Vec<(String, u32, u32)> = r.per_day.iter().map(|d| (d.day.clone(), d.completed, d.failed)).collect();
    let lead: Vec<f64> = r.lead_times.iter().map(|l| l.secs / 3600.0).collect();
    let stage_minutes: Vec<(String, f64)> =
        r.stages.iter().map(|s| (s.stage.clone(), s.time.avg_secs.unwrap_or(0.0) / 60.0)).collect();
    let charts = vec![
        super::charts::per_day(&days, "Deployments per day (completed, failed)"),
        super::charts::series(&lead, "Lead time per deployment", "hours"),
        super::charts::bars(&stage_minutes, "Average time per stage", "minutes"),
    ];
    let stages = r
        .stages
        .iter()
        .map(|s| (s.stage.clone(), hours(s.time.avg_secs), hours(s.time.p50_secs), s.time.count))
        .collect();
    let tasks = r
        .tasks
        .iter()
        .map(|t| TaskFigure {
            task: format!("{} task {} ({})", t.stage, t.task, t.kind),
            failures: t.failures,
            avg: hours(t.time.avg_secs),
            runs: t.time.count,
        })
        .collect();
    let page = ReportsPage {
        chrome: chrome(&v, format!("Reports of {name}")),
        name,
        from: day(r.from),
        to: day(r.to),
        figures,
        charts,
        stages,
        tasks,
        truncated: r.truncated,
    };
    render(StatusCode::OK, &page)
}

/// `GET /portal/audit/export`: the export `drover audit export` writes, as a download (it holds
/// the chain key: keep it as safe as the log).
pub async fn audit_export(State(s): State<AppState>, v: Viewer) -> Response {
    match service::audit::export_stream(s, v.principal).await {
        Ok(stream) => {
            let name = format!("drover-audit-{}.jsonl", Timestamp::now().to_string().get(..10).unwrap_or("export"));
            (
                [
                    (axum::http::header::CONTENT_TYPE, "application/x-ndjson".to_string()),
                    (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
                ],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Err(e) => service_error(e),
    }
}
