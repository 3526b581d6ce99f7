//! Environments (candidate environments): global objects; `environment.manage` changes them.
//! An environment may name the applications allowed to target it.

use drover_core::rbac::{Applications, Privilege};
use drover_core::{Error, Result, validate_name};
use drover_types::{Environment, EnvironmentKind, NewEnvironment, Timestamp};

use super::Ctx;

/// The kind an environment gets from its name when none is given.
pub fn kind_of(name: &str) -> EnvironmentKind {
    match name {
        "dev" | "development" => EnvironmentKind::Dev,
        "qa" | "test" => EnvironmentKind::Qa,
        "staging" | "stage" => EnvironmentKind::Staging,
        "prod" | "production" => EnvironmentKind::Production,
        _ => EnvironmentKind::Custom,
    }
}

/// Environments are shown to those who manage them, and otherwise when they are open to every
/// application or to one the caller can read.
pub(super) fn visible(c: &Ctx<'_>, e: &Environment) -> bool {
    if c.caller.holds_globally(Privilege::EnvironmentManage) || e.applications.is_empty() {
        return true;
    }
    match c.caller.applications_with(Privilege::PipelineRead) {
        Applications::All => true,
        Applications::Only(apps) => e.applications.iter().any(|a| apps.contains(a)),
    }
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("environment {name} not found"))
}

pub async fn list(c: &Ctx<'_>) -> Result<Vec<Environment>> {
    Ok(c.state.store.list_environments().await?.into_iter().filter(|e| visible(c, e)).collect())
}

pub async fn get(c: &Ctx<'_>, name: &str) -> Result<Environment> {
    c.state.store.get_environment(name).await?.filter(|e| visible(c, e)).ok_or_else(|| not_found(name))
}

fn check_applications(apps: &mut Vec<String>) -> Result<()> {
    if apps.len() > 500 {
        return Err(Error::BadRequest("an environment lists at most 500 applications".into()));
    }
    for a in apps.iter() {
        validate_name("application", a).map_err(|e| Error::BadRequest(e.to_string()))?;
    }
    apps.sort();
    apps.dedup();
    Ok(())
}

pub async fn create(c: &Ctx<'_>, e: NewEnvironment) -> Result<Environment> {
    c.require(Privilege::EnvironmentManage)?;
    validate_name("environment", &e.name)?;
    let mut applications = e.applications;
    check_applications(&mut applications)?;
    let env = Environment {
        kind: e.kind.unwrap_or_else(|| kind_of(&e.name)),
        name: e.name,
        labels: e.labels,
        applications,
        created_at: Timestamp::now(),
    };
    if !c.state.store.insert_environment(&env).await? {
        return Err(Error::Conflict(format!("environment {} exists already", env.name)));
    }
    // Left over by a variable set while an environment of this name was being deleted: a new
    // environment never inherits them.
    c.state.variables.delete_all(&env.name).await?;
    Ok(env)
}

/// Changes kind, labels and the applications allowed; pipelines of applications no longer
/// allowed keep their stages but cannot start deployments there.
pub async fn update(c: &Ctx<'_>, name: &str, e: NewEnvironment) -> Result<Environment> {
    c.require(Privilege::EnvironmentManage)?;
    if e.name != name {
        return Err(Error::BadRequest(format!("the body names environment {:?}, the path {name:?}", e.name)));
    }
    let old = c.state.store.get_environment(name).await?.ok_or_else(|| not_found(name))?;
    let mut applications = e.applications;
    check_applications(&mut applications)?;
    let env = Environment { kind: e.kind.unwrap_or(old.kind), labels: e.labels, applications, ..old };
    if !c.state.store.update_environment(&env).await? {
        return Err(not_found(name));
    }
    c.state.variables.changed(); // which applications may use its secrets
    Ok(env)
}

pub async fn delete(c: &Ctx<'_>, name: &str) -> Result<()> {
    c.require(Privilege::EnvironmentManage)?;
    let s = c.state;
    let used = s.store.list_pipelines().await?.into_iter().find(|p| p.stages.iter().any(|st| st.environment == name));
    if let Some(p) = used {
        return Err(Error::Conflict(format!("environment {name} is used by pipeline {}", p.name)));
    }
    if s.store.list_agents().await?.iter().any(|a| a.environment == name) {
        return Err(Error::Conflict(format!("environment {name} still has agents; remove them first")));
    }
    // Its variables first: an environment created later with this name starts without them.
    let n = s.variables.delete_all(name).await?;
    if n > 0 {
        tracing::info!(environment = name, variables = n, "the environment's variables were deleted with it");
    }
    if s.store.delete_environment(name).await? { Ok(()) } else { Err(not_found(name)) }
}

/// Whether `application` may target environment `e`.
pub fn admits(e: &Environment, application: &str) -> bool {
    e.applications.is_empty() || e.applications.iter().any(|a| a == application)
}
