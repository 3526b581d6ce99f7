//! Variables in the engine: resolved when a deployment starts (the plain values of every stage
//! are fixed in the deployment's copy of the pipeline, as each stage sees them), secret ones
//! looked up when an attempt is handed out (only those its task refers to), and every log line,
//! task message and webhook result masked before it is stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_core::model::{DeploymentState, TaskRecord};
use drover_core::vars::{self, Masker};
use drover_core::{Error, Result};
use drover_types::agent::TaskVariables;
use drover_types::{PipelineSpec, StageSpec, TaskSpec};

use super::Engine;
use crate::variables::{Snapshot, Value, Variables};

/// Most bytes of plain variables one deployment keeps (every stage's values, as it started).
const MAX_STORED_BYTES: usize = 1 << 20;

/// A secret in a command given as a list would be an argument, readable by every user of the
/// agent's host in its process list: only the shell form (which reads it from the environment)
/// may use one. `Ok` for every other task.
pub fn refuse_secret_in_a_list(t: &TaskSpec) -> std::result::Result<(), String> {
    if let TaskSpec::Run { command: drover_types::CommandSpec::Exec(_), .. } = t {
        return Err("command: a secret variable cannot be used in a command given as a list (it would be an argument, visible in the process list); write the command as a string, where the shell reads it from the environment".into());
    }
    Ok(())
}

/// What stage tasks may refer to: the pipeline's variables, overridden by the environment's,
/// overridden by the stage's own.
pub fn stage_scope(
    pipeline: &BTreeMap<String, String>,
    environment: &BTreeMap<String, Value>,
    stage: &StageSpec,
) -> BTreeMap<String, Value> {
    let plain = |m: &BTreeMap<String, String>| -> BTreeMap<String, Value> {
        m.iter().map(|(k, v)| (k.clone(), Value::Plain(v.clone()))).collect()
    };
    vars::merge(&plain(pipeline), environment, &plain(&stage.variables))
}

/// Every reference of stage `i`'s tasks must be in its scope (built from
/// [`Snapshot::for_application`]: a secret of an environment that does not list the
/// application is not in it at all, so a variable of the pipeline's own of the same name is
/// what the task gets); a secret one only in a command the shell runs. Errors start with the
/// key's path, so that an applied document gets its line. The same check when a pipeline is
/// applied and when a deployment starts.
///
/// A reference to a secret the application may not use is named as such only when
/// `explain_secrets` (the caller may read the environment's variables); to anyone else it is
/// exactly an unknown variable, so an answer never tells which secrets an environment holds.
pub fn check_references(
    i: usize,
    stage: &StageSpec,
    scope: &BTreeMap<String, Value>,
    snap: &Snapshot,
    application: &str,
    explain_secrets: bool,
) -> Result<()> {
    for (j, t) in stage.tasks.iter().enumerate() {
        let at = |e: String| format!("stages[{i}].tasks[{j}].{e}");
        for (key, name) in vars::task_references(t).map_err(|e| Error::Invalid(at(e)))? {
            match scope.get(name) {
                None if explain_secrets && matches!(snap.of(&stage.environment).get(name), Some(Value::Secret(_))) => {
                    return Err(Error::Forbidden(at(format!(
                        "{key}: ${{{name}}} is a secret variable of environment {env}, which does not list application {application} (an administrator can allow it: drover environments set {env} --application {application})",
                        env = stage.environment
                    ))));
                }
                None => {
                    return Err(Error::Invalid(at(format!(
                        "{key}: unknown variable ${{{name}}}, which is not defined for environment {env}; define it under variables: (the pipeline's or the stage's) or for the environment (drover variables set {env} {name} VALUE); write $${{ for a literal ${{",
                        env = stage.environment
                    ))));
                }
                Some(Value::Secret(_)) => refuse_secret_in_a_list(t).map_err(|e| Error::Invalid(at(e)))?,
                Some(Value::Plain(_)) => {}
            }
        }
    }
    Ok(())
}

/// What an attempt gets: its task with references replaced, and its environment variables.
pub(super) struct Resolved {
    pub spec: TaskSpec,
    pub variables: TaskVariables,
    pub secret: Vec<String>,
}

impl Engine {
    /// Environments' variables come from here (set once, when the orchestrator starts).
    pub fn use_variables(&self, v: Arc<Variables>) {
        let _ = self.variables.set(v);
    }

    /// The variables as of at most a second ago (none without [`Self::use_variables`]).
    pub(super) async fn snapshot(&self) -> Result<Arc<Snapshot>> {
        match self.variables.get() {
            Some(v) => v.snapshot().await,
            None => Ok(Arc::new(Snapshot::default())),
        }
    }

    /// Checks every stage's references (as at apply: [`check_references`]) and fixes each
    /// stage's plain variables (pipeline < environment < stage) in `spec`. Secret ones stay
    /// names: their values are read when an attempt needs them.
    pub(super) async fn resolve_at_start(&self, spec: &mut PipelineSpec) -> Result<()> {
        let snap = self.snapshot().await?;
        let mut stored = 0;
        for i in 0..spec.stages.len() {
            let stage = &spec.stages[i];
            let scope =
                stage_scope(&spec.variables, &snap.for_application(&stage.environment, &spec.application), stage);
            // Whoever starts it was checked with their own rights just before (the service).
            check_references(i, stage, &scope, &snap, &spec.application, false)?;
            let plain: BTreeMap<String, String> = scope
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::Plain(v) => Some((k, v)),
                    Value::Secret(_) => None,
                })
                .collect();
            stored += plain.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            if stored > MAX_STORED_BYTES {
                return Err(Error::Invalid(format!(
                    "the stages' variables come to more than {} KiB for one deployment (each stage keeps its values); use fewer or smaller variables",
                    MAX_STORED_BYTES / 1024
                )));
            }
            spec.stages[i].variables = plain;
        }
        Ok(())
    }

    /// The task of `t` as its attempt runs it; the error says which variable is missing.
    pub(super) async fn resolve_task(&self, st: &DeploymentState, t: &TaskRecord) -> Result<Resolved> {
        let plain = st.deployment.spec.stages.get(t.stage_index).map(|s| s.variables.clone()).unwrap_or_default();
        let refs = vars::task_references(&t.spec).map_err(Error::Invalid)?;
        let mut secret = Vec::new();
        let mut values = plain.clone();
        let needs_lookup = refs.iter().any(|(_, n)| !plain.contains_key(*n));
        let snap = if needs_lookup { Some(self.snapshot().await?) } else { None };
        if let Some(snap) = &snap {
            let env = snap.of(&t.environment);
            for (_, name) in &refs {
                if plain.contains_key(*name) {
                    continue;
                }
                match env.get(*name) {
                    Some(Value::Secret(Some(v))) => {
                        values.insert(name.to_string(), v.clone());
                        secret.push(name.to_string());
                    }
                    Some(Value::Plain(v)) => {
                        values.insert(name.to_string(), v.clone());
                    }
                    Some(Value::Secret(None)) => {
                        return Err(Error::Invalid(format!(
                            "secret variable {name} of environment {} cannot be opened (see the orchestrator log)",
                            t.environment
                        )));
                    }
                    None => {
                        return Err(Error::Invalid(format!(
                            "variable {name} of environment {} was deleted after the deployment started; set it again and retry the task",
                            t.environment
                        )));
                    }
                }
            }
        }
        if let Some(snap) = snap.as_ref().filter(|_| !secret.is_empty()) {
            // The environment must still list the application (it may have changed since the
            // start: a retry days later, an approval that waited; seen within a second).
            let app = &st.deployment.application;
            if !snap.lists(&t.environment, app) {
                return Err(Error::Invalid(format!(
                    "environment {} no longer lists application {app}: its secret variables are not handed out",
                    t.environment
                )));
            }
            refuse_secret_in_a_list(&t.spec).map_err(Error::Invalid)?;
        }
        let spec = vars::substitute_task(&t.spec, |n| values.get(n).cloned()).map_err(Error::Invalid)?;
        if let TaskSpec::HttpCheck { url, .. } = &spec
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            let shown =
                Masker::new(secret.iter().filter_map(|n| values.get(n)).map(String::as_str)).mask(url).into_owned();
            return Err(Error::Invalid(format!(
                "the check's url is not an http:// or https:// URL once its variables are filled in: {shown:?}"
            )));
        }
        Ok(Resolved { spec, variables: TaskVariables(values), secret })
    }
}
