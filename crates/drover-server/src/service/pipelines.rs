//! Pipelines: application objects. Reads need `pipeline.read` on the pipeline's application;
//! writes need `pipeline.manage` on the new application *and* on the existing pipeline's, and
//! naming an environment that does not exist needs `environment.manage`.

use std::collections::BTreeSet;

use drover_core::rbac::Privilege;
use drover_core::store::DeploymentFilter;
use drover_core::{Error, Result};
use drover_types::{ApplyResult, Environment, Pipeline, PipelineSpec, Timestamp};

use super::Ctx;
use super::environments::{admits, kind_of};

fn missing(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("pipeline {name} not found")
}

pub async fn list(c: &Ctx<'_>) -> Result<Vec<Pipeline>> {
    let apps = c.caller.applications_with(Privilege::PipelineRead);
    Ok(c.state.store.list_pipelines().await?.into_iter().filter(|p| apps.contains(&p.application)).collect())
}

pub async fn get(c: &Ctx<'_>, name: &str) -> Result<Pipeline> {
    c.state
        .store
        .get_pipeline(name)
        .await?
        .filter(|p| c.sees(Privilege::PipelineRead, &p.application))
        .ok_or_else(|| Error::NotFound(missing(name)()))
}

/// Every check [`apply`] makes, writing nothing: the caller's rights on the application (and on
/// an existing pipeline of another one), references, variables, outbound calls, environments.
/// Returns the pipeline as stored now (if any) and the environments applying would create.
pub async fn check(c: &Ctx<'_>, spec: &PipelineSpec) -> Result<(Option<Pipeline>, Vec<String>)> {
    let s = c.state;
    let app = spec.application.clone();
    let name = spec.name().to_string();
    c.create_in(Privilege::PipelineManage, &app)?;
    let existing = s.store.get_pipeline(&name).await?;
    if let Some(old) = &existing
        && old.application != app
    {
        // Taking over a pipeline of another application needs the right to change that one.
        // Of one the caller cannot read, the answer says only that the name is not free (names
        // are one namespace): not its application, not what it holds.
        if !c.sees(Privilege::PipelineRead, &old.application) {
            tracing::warn!(principal = %c.label(), pipeline = %name, "pipeline take-over refused");
            return Err(Error::Conflict(format!("the pipeline name {name} is not available; choose another one")));
        }
        c.on_application(Privilege::PipelineManage, Privilege::PipelineRead, &old.application, missing(&name))?;
    }
    // Every environment first: missing ones need environment.manage, existing ones must admit
    // the application (before anything about them — their variables — is looked at). Nothing
    // is written until all of it holds.
    let envs: BTreeSet<&str> = spec.stages.iter().map(|st| st.environment.as_str()).collect();
    let mut to_create = Vec::new();
    for env in envs {
        // One the caller may not see is answered for exactly as a missing one.
        let seen = s.store.get_environment(env).await?.filter(|e| super::environments::visible(c, e));
        match seen {
            Some(e) if !admits(&e, &app) => {
                return Err(Error::Forbidden(format!(
                    "environment {env} does not accept pipelines of application {app}; ask an administrator"
                )));
            }
            Some(_) => {}
            None => to_create.push(env.to_string()),
        }
    }
    if !to_create.is_empty() && !c.caller.holds_globally(Privilege::EnvironmentManage) {
        return Err(Error::Forbidden(format!(
            "environment {} does not exist; creating it needs environment.manage (ask an administrator to create it)",
            to_create.join(", ")
        )));
    }
    references_exist(c, spec).await?;
    variables_resolve(c, &spec.application, &spec.variables, &spec.stages).await?;
    outbound_calls_allowed(c, spec).await?;
    Ok((existing, to_create))
}

/// Creates or replaces the pipeline `spec` names. Returns whether it was created.
pub async fn apply(c: &Ctx<'_>, spec: PipelineSpec) -> Result<ApplyResult> {
    let s = c.state;
    let name = spec.name().to_string();
    let (existing, to_create) = check(c, &spec).await?;
    let now = Timestamp::now();
    let mut created_envs = Vec::new();
    for env in to_create {
        let e = Environment {
            kind: kind_of(&env),
            name: env.clone(),
            labels: Default::default(),
            applications: vec![],
            created_at: now,
        };
        if s.store.insert_environment(&e).await? {
            s.variables.delete_all(&env).await?; // never inherited from an earlier one
            created_envs.push(env);
        }
    }
    let (outcome, pipeline) = match existing {
        Some(p) if p.application == spec.application && p.stages == spec.stages && p.variables == spec.variables => {
            ("unchanged", p)
        }
        other => {
            let p = Pipeline {
                name: name.clone(),
                application: spec.application.clone(),
                variables: spec.variables.clone(),
                stages: spec.stages.clone(),
                created_at: other.as_ref().map(|o| o.created_at).unwrap_or(now),
                updated_at: now,
            };
            s.store.put_pipeline(&p).await?;
            let what = if other.is_some() { "updated" } else { "created" };
            tracing::info!(pipeline = %name, by = %c.label(), "pipeline {what}");
            (what, p)
        }
    };
    Ok(ApplyResult { pipeline, outcome: outcome.into(), created_environments: created_envs })
}

pub async fn delete(c: &Ctx<'_>, name: &str) -> Result<()> {
    let s = c.state;
    let old = s.store.get_pipeline(name).await?.ok_or_else(|| Error::NotFound(missing(name)()))?;
    c.on_application(Privilege::PipelineManage, Privilege::PipelineRead, &old.application, missing(name))?;
    let f = DeploymentFilter { pipeline: Some(name.to_string()), limit: Some(10_000), ..Default::default() };
    if s.store.list_deployments(&f).await?.iter().any(|d| !d.status.is_terminal()) {
        return Err(Error::Conflict(format!("pipeline {name} has active deployments; abort them first")));
    }
    if s.store.delete_pipeline(name).await? { Ok(()) } else { Err(Error::NotFound(missing(name)())) }
}

/// What tasks name must exist: approval roles and authentication profiles. (Errors start with
/// the key's path, so that a YAML document's line can be added.)
async fn references_exist(c: &Ctx<'_>, spec: &PipelineSpec) -> Result<()> {
    use drover_types::TaskSpec;
    for (i, st) in spec.stages.iter().enumerate() {
        for (j, t) in st.tasks.iter().enumerate() {
            match t {
                TaskSpec::Approval { role: Some(r), .. } if c.state.principals.role(r).is_none() => {
                    return Err(Error::Invalid(format!(
                        "stages[{i}].tasks[{j}].role: unknown role {r:?} (built-in roles: {}; or create it first)",
                        drover_core::rbac::BUILT_IN_ROLES.join(", ")
                    )));
                }
                TaskSpec::Webhook { auth_profile: Some(n), .. }
                    if crate::profiles::Profiles::get(c.state, n).await?.is_none() =>
                {
                    return Err(Error::Invalid(format!(
                        "stages[{i}].tasks[{j}].auth_profile: no authentication profile {n:?} (create it first)"
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Every `${NAME}` must be a variable of the pipeline, the stage or the stage's environment,
/// a secret one only where it may be used ([`crate::engine::check_references`], checked again
/// when a deployment starts). Which secrets an environment holds is said only to those who may
/// read its variables.
pub(super) async fn variables_resolve(
    c: &Ctx<'_>,
    application: &str,
    variables: &std::collections::BTreeMap<String, String>,
    stages: &[drover_types::StageSpec],
) -> Result<()> {
    let snap = c.state.variables.snapshot().await?;
    let explain = c.caller.holds_globally(Privilege::VariableRead);
    for (i, st) in stages.iter().enumerate() {
        let scope = crate::engine::stage_scope(variables, &snap.for_application(&st.environment, application), st);
        crate::engine::check_references(i, st, &scope, &snap, application, explain)?;
    }
    Ok(())
}

/// Every `webhook` URL must be one the orchestrator may call (`[outbound]`, and the profile's
/// own `allowed_urls` when the profile exists): refused at apply time, not at 3 a.m. The
/// scheme, host and port cannot come from placeholders. Checked again, resolved, at call time.
async fn outbound_calls_allowed(c: &Ctx<'_>, spec: &PipelineSpec) -> Result<()> {
    for (i, st) in spec.stages.iter().enumerate() {
        for (j, t) in st.tasks.iter().enumerate() {
            let drover_types::TaskSpec::Webhook { url, auth_profile, .. } = t else { continue };
            let at = |e: String| Error::Invalid(format!("stages[{i}].tasks[{j}].url: {e}"));
            let authority = url.split_once("://").map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
            if authority.is_some_and(|a| a.contains("{{")) {
                return Err(at("the scheme, host and port cannot use {{placeholders}}".into()));
            }
            let profile = match auth_profile {
                Some(n) => crate::profiles::Profiles::get(c.state, n).await?,
                None => None,
            };
            c.state.outbound.permits(url, profile.as_ref().map(|p| p.allowed_urls.as_slice())).map_err(at)?;
        }
    }
    Ok(())
}
