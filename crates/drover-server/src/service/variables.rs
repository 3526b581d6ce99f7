//! Environments' variables: listing needs `variable.read`, setting and deleting
//! `variable.manage` (both global). A secret's value is write-only. Using a secret in a
//! pipeline needs `pipeline.manage` on the pipeline's application (checked at apply) and the
//! environment listing that application (checked at apply, when a deployment starts and for
//! every attempt that gets a secret: `engine/vars.rs`).

use drover_core::rbac::Privilege;
use drover_core::vars::{self, MAX_MAP_BYTES, MAX_VARIABLES};
use drover_core::{Error, Result};
use drover_types::{SetVariable, Variable};

use super::Ctx;

async fn environment_exists(c: &Ctx<'_>, env: &str) -> Result<()> {
    match c.state.store.get_environment(env).await? {
        Some(_) => Ok(()),
        None => Err(Error::NotFound(format!("environment {env} not found"))),
    }
}

pub async fn list(c: &Ctx<'_>, env: &str) -> Result<Vec<Variable>> {
    c.require(Privilege::VariableRead)?;
    environment_exists(c, env).await?;
    c.state.variables.list(env).await
}

pub async fn set(c: &Ctx<'_>, env: &str, name: &str, v: SetVariable) -> Result<Variable> {
    c.require(Privilege::VariableManage)?;
    vars::validate_name(name).map_err(Error::BadRequest)?;
    vars::validate_value(name, &v.value).map_err(Error::BadRequest)?;
    if v.secret {
        vars::validate_secret(name, &v.value).map_err(Error::BadRequest)?;
    }
    environment_exists(c, env).await?;
    // The environment's variables together stay within a map's bounds (they all go into the
    // environment of every run task there).
    let (others, bytes) = c.state.variables.besides(env, name).await?;
    if others >= MAX_VARIABLES {
        return Err(Error::BadRequest(format!("environment {env} has {MAX_VARIABLES} variables already")));
    }
    if bytes + name.len() + v.value.len() > MAX_MAP_BYTES {
        return Err(Error::BadRequest(format!(
            "environment {env}'s variables would come to more than {} KiB",
            MAX_MAP_BYTES / 1024
        )));
    }
    let out = c.state.variables.put(env, name, &v.value, v.secret, &c.label()).await?;
    tracing::info!(environment = env, variable = name, secret = v.secret, by = %c.label(), "variable set");
    Ok(out)
}

pub async fn delete(c: &Ctx<'_>, env: &str, name: &str) -> Result<()> {
    c.require(Privilege::VariableManage)?;
    vars::validate_name(name).map_err(Error::BadRequest)?;
    if c.state.variables.delete(env, name).await? {
        tracing::info!(environment = env, variable = name, by = %c.label(), "variable deleted");
        Ok(())
    } else {
        Err(Error::NotFound(format!("environment {env} has no variable {name}")))
    }
}
