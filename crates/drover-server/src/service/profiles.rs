//! Authentication profiles (`auth-profile.manage`): credentials the orchestrator uses to call
//! other systems; their secrets are write-only.

use drover_core::rbac::Privilege;
use drover_core::{Error, Result};
use drover_types::AuthProfile;

use super::Ctx;
use crate::profiles::{KIND, Profiles};

pub async fn list(c: &Ctx<'_>) -> Result<Vec<AuthProfile>> {
    c.require(Privilege::AuthProfileManage)?;
    Profiles::list(c.state).await
}

pub async fn get(c: &Ctx<'_>, name: &str) -> Result<AuthProfile> {
    c.require(Privilege::AuthProfileManage)?;
    Profiles::get(c.state, name).await?.ok_or_else(|| Error::NotFound(format!("auth profile {name} not found")))
}

pub async fn create(c: &Ctx<'_>, p: AuthProfile) -> Result<AuthProfile> {
    c.require(Privilege::AuthProfileManage)?;
    c.state.profiles.put(c.state, p, true).await
}

pub async fn put(c: &Ctx<'_>, name: &str, p: AuthProfile) -> Result<AuthProfile> {
    c.require(Privilege::AuthProfileManage)?;
    if p.name != name {
        return Err(Error::BadRequest(format!("the body names profile {:?}, the path {name:?}", p.name)));
    }
    c.state.profiles.put(c.state, p, false).await
}

pub async fn delete(c: &Ctx<'_>, name: &str) -> Result<()> {
    c.require(Privilege::AuthProfileManage)?;
    if c.state.store.record_delete(KIND, name).await? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("auth profile {name} not found")))
    }
}
