//! The pipeline editor's form: the pipeline's stages (name, environment, progression) and their
//! tasks with the fields of their type, as plain inputs. It works without JavaScript: adding
//! or removing a stage or a task, or changing a task's type, posts the form back and it is
//! drawn again. The pipeline's and stages' variables and a stage's fleet settings (targets,
//! batch, failures allowed, agent labels, dispatch timeout) and approvals' timeouts are fields
//! too. What the form does not show (self-approval, hooks...) is kept: each post carries the pipeline it started from (`base`, JSON) and the form's
//! fields are laid over it. "Check" turns the result into the YAML `drover apply` reads and
//! goes on as the YAML editor does (checks, diff, save).

use askama::Template;
use axum::extract::{Form, Path};
use axum::http::StatusCode;
use axum::response::Response;
use drover_core::spec;
use drover_types::PipelineSpec;
use serde_json::{Value, json};

use super::pages::{Chrome, chrome};
use super::{Viewer, render, service_error};
use crate::service;

pub const TASK_TYPES: &[&str] = &["deploy", "run", "http-check", "approval", "wait", "webhook"];

/// The fields the form shows for each task type, with their labels.
fn fields_of(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "run" => &[("command", "Command"), ("timeout", "Timeout (30s, 5m)")],
        "http-check" => &[("url", "URL"), ("expect_status", "Expected status"), ("timeout", "Timeout")],
        "approval" => &[
            ("role", "Role that decides"),
            ("approvals", "Approvers needed"),
            ("timeout", "Undecided for this long (4h, 2d)"),
            ("on_timeout", "Then (reject or abort)"),
        ],
        "wait" => &[("duration", "Duration")],
        "webhook" => {
            &[("url", "URL"), ("method", "Method"), ("auth_profile", "Authentication profile"), ("body", "Body")]
        }
        _ => &[],
    }
}

/// Numeric fields (the rest are text).
fn numeric(field: &str) -> bool {
    matches!(field, "expect_status" | "approvals")
}

pub struct FieldView {
    pub name: String,
    pub label: &'static str,
    pub value: String,
    pub id: String,
    /// The error is about this field.
    pub invalid: bool,
}

pub struct TaskView {
    pub index: usize,
    pub kind: String,
    pub fields: Vec<FieldView>,
}

pub struct StageView {
    pub index: usize,
    pub name: String,
    pub environment: String,
    pub manual: bool,
    /// `one`, `all` or `rolling`.
    pub targets: String,
    pub batch: String,
    pub max_failures: String,
    /// How long a task may wait for an agent to claim it (`15m`).
    pub dispatch_timeout: String,
    /// The agent labels a fleet stage selects by, `name=value, ...`.
    pub agents: String,
    /// `NAME=value` lines.
    pub variables: String,
    /// A value the text field cannot carry as it is: the field is shown, not sent (kept).
    pub variables_locked: bool,
    pub agents_locked: bool,
    pub tasks: Vec<TaskView>,
    /// The stage input the error is about (`name`, `batch`, `max-failures`...), or empty.
    pub invalid: String,
}

pub const TARGETS: &[&str] = &["one", "all", "rolling"];

/// An object of strings as `name=value` items joined by `sep`.
fn pairs_text(v: &Value, sep: &str) -> String {
    v.as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={}", text_of(v))).collect::<Vec<_>>().join(sep))
        .unwrap_or_default()
}

/// Whether some value of the object would not come back as it is from `name=value` text:
/// one with a separator in it, or spaces around it.
fn not_as_text(v: &Value, commas: bool) -> bool {
    v.as_object().is_some_and(|o| {
        o.values().any(|v| {
            let t = text_of(v);
            t.contains('\n') || (commas && t.contains(',')) || t.trim() != t
        })
    })
}

/// `name=value` items separated by new lines (and, for labels, commas) as an object; an item
/// without `=` is an error naming it.
pub(super) fn pairs_of(text: &str, commas: bool) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    let items = text.split(|c| c == '\n' || (commas && c == ','));
    for item in items.map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("{item:?}: write NAME=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Sets `key` to `v`, or removes it when `v` is empty (the YAML then leaves it out).
fn set_or_remove(o: &mut Value, key: &str, v: Value) {
    let empty = match &v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if empty {
        if let Some(m) = o.as_object_mut() {
            m.remove(key);
        }
    } else {
        o[key] = v;
    }
}

#[derive(Template)]
#[template(path = "portal/form.html")]
pub struct FormPage {
    pub chrome: Chrome,
    pub name: String,
    pub base: String,
    pub application: String,
    pub pipeline: String,
    pub stages: Vec<StageView>,
    pub types: &'static [&'static str],
    pub targets: &'static [&'static str],
    pub variables: String,
    pub variables_locked: bool,
    pub error: String,
    /// The id of the input the error is about (empty: the error is about the whole form).
    pub error_field: String,
}

/// Which input makes the pipeline unreadable (serde says what, not where): the first stage
/// setting that cannot be read on its own, or the first task field without which its task
/// can. Returns the input's id and the path the error is then given.
fn unreadable(spec: &Value) -> Option<(String, String)> {
    for (i, st) in spec["stages"].as_array()?.iter().enumerate() {
        for (key, v) in st.as_object()?.iter().filter(|(k, _)| k.as_str() != "tasks") {
            let alone = json!({"name": "x", "environment": "x", key.as_str(): v});
            if serde_json::from_value::<drover_types::StageSpec>(alone).is_err() {
                let path = format!("stages[{i}].{key}");
                return field_of(&format!("{path}: ")).map(|id| (id, path));
            }
        }
        for (j, t) in st["tasks"].as_array()?.iter().enumerate() {
            let Err(e) = serde_json::from_value::<drover_types::TaskSpec>(t.clone()) else { continue };
            let fields = fields_of(t["type"].as_str().unwrap_or_default());
            // The field the message names (`url`), else the one without which the task reads.
            let named = fields.iter().find(|(f, _)| e.to_string().contains(&format!("`{f}`")));
            let culprit = named.or_else(|| {
                fields.iter().find(|(f, _)| {
                    let mut without = t.clone();
                    without.as_object_mut().and_then(|o| o.remove(*f)).is_some()
                        && serde_json::from_value::<drover_types::TaskSpec>(without).is_ok()
                })
            });
            if let Some((f, _)) = culprit {
                return Some((format!("s{i}-t{j}-{f}"), format!("stages[{i}].tasks[{j}].{f}")));
            }
        }
    }
    None
}

impl FormPage {
    /// Marks the input with id `id` as the one the error is about.
    fn mark(&mut self, id: &str) {
        self.error_field = id.to_string();
        for st in &mut self.stages {
            if let Some(key) = id.strip_prefix(&format!("s{}-", st.index)) {
                st.invalid = key.to_string();
            }
            for f in st.tasks.iter_mut().flat_map(|t| t.fields.iter_mut()) {
                f.invalid = f.id == id;
            }
        }
    }
}

/// The form's input an error names: `stages[1].tasks[0].url: ...` is `s1-t0-url`,
/// `stages[0].batch: ...` is `s0-batch`, `variables.X: ...` is `variables`.
pub fn field_of(message: &str) -> Option<String> {
    let path = message.split(": ").next()?;
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    if path.starts_with("variables") {
        return Some("variables".into());
    }
    if path == "application" || path == "pipeline" {
        return Some(path.into());
    }
    let rest = path.strip_prefix("stages[")?;
    let (i, rest) = rest.split_once("].")?;
    let i: usize = i.parse().ok()?;
    if let Some(task) = rest.strip_prefix("tasks[") {
        let (j, field) = task.split_once("].")?;
        let j: usize = j.parse().ok()?;
        return Some(format!("s{i}-t{j}-{}", ident(field)));
    }
    let key = ident(rest);
    let id = match key.as_str() {
        "name" | "environment" | "targets" | "batch" | "agents" | "variables" => format!("s{i}-{key}"),
        "max_failures" => format!("s{i}-max-failures"),
        "dispatch_timeout" => format!("s{i}-dispatch-timeout"),
        _ => return None,
    };
    Some(id)
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(_) => v.to_string(),
        other => other.to_string(),
    }
}

fn view(v: &Viewer, name: &str, spec: &Value, error: String) -> FormPage {
    let stages = spec["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, st)| StageView {
                    index: i,
                    name: text_of(&st["name"]),
                    environment: text_of(&st["environment"]),
                    manual: st["progression"] == "manual",
                    targets: st["targets"].as_str().unwrap_or("one").to_string(),
                    batch: text_of(&st["batch"]),
                    max_failures: text_of(&st["max_failures"]),
                    dispatch_timeout: text_of(&st["dispatch_timeout"]),
                    agents: pairs_text(&st["agents"]["labels"], ", "),
                    variables: pairs_text(&st["variables"], "\n"),
                    variables_locked: not_as_text(&st["variables"], false),
                    agents_locked: not_as_text(&st["agents"]["labels"], true),
                    invalid: String::new(),
                    tasks: st["tasks"]
                        .as_array()
                        .map(|ts| {
                            ts.iter()
                                .enumerate()
                                .map(|(j, t)| {
                                    let kind = text_of(&t["type"]);
                                    let fields = fields_of(&kind)
                                        .iter()
                                        .map(|(f, label)| FieldView {
                                            name: format!("s{i}.t{j}.{f}"),
                                            id: format!("s{i}-t{j}-{f}"),
                                            label,
                                            value: text_of(&t[*f]),
                                            invalid: false,
                                        })
                                        .collect();
                                    TaskView { index: j, kind, fields }
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    FormPage {
        chrome: chrome(v, if name.is_empty() { "New pipeline".to_string() } else { format!("Edit {name}") }),
        name: name.to_string(),
        base: serde_json::to_string(spec).unwrap_or_default(),
        application: text_of(&spec["application"]),
        pipeline: text_of(&spec["pipeline"]),
        stages,
        types: TASK_TYPES,
        targets: TARGETS,
        variables: pairs_text(&spec["variables"], "\n"),
        variables_locked: not_as_text(&spec["variables"], false),
        error,
        error_field: String::new(),
    }
}

/// `GET /portal/pipelines/{name}/form`.
pub async fn edit(v: Viewer, Path(name): Path<String>) -> Response {
    match service::pipelines::get(&v.ctx(), &name).await {
        Ok(p) => {
            let spec = serde_json::to_value(spec::of_pipeline(&p)).unwrap_or(Value::Null);
            render(StatusCode::OK, &view(&v, &name, &spec, String::new()))
        }
        Err(e) => service_error(e),
    }
}

/// Pairs a form post may carry (64 stages of 64 tasks would be far fewer).
const MAX_PAIRS: usize = 4096;

/// The form's fields laid over the pipeline it started from; an error for a form larger than
/// a pipeline may be.
fn merged(f: &[(String, String)]) -> Result<Value, String> {
    if f.len() > MAX_PAIRS {
        return Err(format!("the form has more than {MAX_PAIRS} fields"));
    }
    let fields: std::collections::HashMap<&str, &str> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let get = |k: &str| fields.get(k).copied();
    let mut spec: Value = get("base").and_then(|b| serde_json::from_str(b).ok()).unwrap_or_else(|| json!({}));
    if !spec.is_object() {
        spec = json!({});
    }
    spec["application"] = json!(get("application").unwrap_or("").trim());
    match get("pipeline").map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) => spec["pipeline"] = json!(p),
        None => {
            if let Some(o) = spec.as_object_mut() {
                o.remove("pipeline");
            }
        }
    }
    if let Some(text) = get("variables") {
        set_or_remove(&mut spec, "variables", json!(pairs_of(text, false).map_err(|e| format!("variables: {e}"))?));
    }
    let count = |k: &str| get(k).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    if count("stages") > spec::MAX_STAGES {
        return Err(format!("at most {} stages", spec::MAX_STAGES));
    }
    let base_stages = spec["stages"].as_array().cloned().unwrap_or_default();
    let mut stages = Vec::new();
    for i in 0..count("stages") {
        let mut st = base_stages.get(i).cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
        st["name"] = json!(get(&format!("s{i}.name")).unwrap_or("").trim());
        st["environment"] = json!(get(&format!("s{i}.environment")).unwrap_or("").trim());
        st["progression"] = json!(if get(&format!("s{i}.manual")).is_some() { "manual" } else { "automatic" });
        if let Some(t) = get(&format!("s{i}.targets")).map(str::trim) {
            // `one` is the default: left out, as `drover apply` writes it.
            set_or_remove(&mut st, "targets", json!(if t == "one" { "" } else { t }));
        }
        if let Some(b) = get(&format!("s{i}.batch")).map(str::trim) {
            set_or_remove(&mut st, "batch", b.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(b)));
        }
        if let Some(m) = get(&format!("s{i}.max_failures")).map(str::trim) {
            set_or_remove(&mut st, "max_failures", m.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(m)));
        }
        if let Some(d) = get(&format!("s{i}.dispatch_timeout")).map(str::trim) {
            set_or_remove(&mut st, "dispatch_timeout", json!(d));
        }
        if let Some(a) = get(&format!("s{i}.agents")) {
            let labels = pairs_of(a, true).map_err(|e| format!("stage {}: agent labels: {e}", i + 1))?;
            set_or_remove(&mut st, "agents", if labels.is_empty() { Value::Null } else { json!({"labels": labels}) });
        }
        if let Some(v) = get(&format!("s{i}.variables")) {
            let vars = pairs_of(v, false).map_err(|e| format!("stage {}: variables: {e}", i + 1))?;
            set_or_remove(&mut st, "variables", json!(vars));
        }
        let base_tasks = st["tasks"].as_array().cloned().unwrap_or_default();
        if count(&format!("s{i}.tasks")) > spec::MAX_TASKS {
            return Err(format!("at most {} tasks in a stage", spec::MAX_TASKS));
        }
        let mut tasks = Vec::new();
        for j in 0..count(&format!("s{i}.tasks")) {
            let kind = get(&format!("s{i}.t{j}.type")).unwrap_or("deploy").to_string();
            // The task it was, if it keeps its type (its other fields stay); else a new one.
            let mut t = base_tasks
                .get(j)
                .cloned()
                .filter(|t| t["type"] == kind.as_str())
                .unwrap_or_else(|| json!({ "type": kind }));
            for (field, _) in fields_of(&kind) {
                let Some(raw) = get(&format!("s{i}.t{j}.{field}")) else { continue };
                let raw = raw.trim();
                let value = if raw.is_empty() {
                    Value::Null
                } else if numeric(field) {
                    raw.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(raw))
                } else if *field == "command" && t["command"].is_array() {
                    // A command that was a list stays one (shown as JSON); a shell line stays text.
                    serde_json::from_str(raw).unwrap_or_else(|_| json!(raw))
                } else {
                    json!(raw)
                };
                match (value, t.as_object_mut()) {
                    (Value::Null, Some(o)) => {
                        o.remove(*field);
                    }
                    (v, _) => t[*field] = v,
                }
            }
            tasks.push(t);
        }
        st["tasks"] = json!(tasks);
        stages.push(st);
    }
    spec["stages"] = json!(stages);
    Ok(spec)
}

/// What a post asks of the form.
fn apply_op(spec: &mut Value, op: &str) {
    let stages = spec["stages"].as_array_mut();
    let Some(stages) = stages else { return };
    let index = |s: &str| s.parse::<usize>().ok();
    match op.split(':').collect::<Vec<_>>().as_slice() {
        ["add-stage"] if stages.len() < spec::MAX_STAGES => {
            stages.push(json!({"name": "", "environment": "", "tasks": [{"type": "deploy"}]}))
        }
        ["remove-stage", i] => {
            if let Some(i) = index(i).filter(|i| *i < stages.len()) {
                stages.remove(i);
            }
        }
        ["add-task", i] => {
            if let Some(st) = index(i).and_then(|i| stages.get_mut(i))
                && let Some(ts) = st["tasks"].as_array_mut()
                && ts.len() < spec::MAX_TASKS
            {
                ts.push(json!({"type": "run", "command": ""}));
            }
        }
        ["remove-task", i, j] => {
            if let (Some(st), Some(j)) = (index(i).and_then(|i| stages.get_mut(i)), index(j))
                && let Some(ts) = st["tasks"].as_array_mut()
                && j < ts.len()
            {
                ts.remove(j);
            }
        }
        _ => {}
    }
}

/// `POST /portal/pipelines/form`: draw the form again (after an add, a remove, a type change),
/// or check it: then the editor's checks and diff, on the YAML it makes.
pub async fn post(v: Viewer, Form(f): Form<Vec<(String, String)>>) -> Response {
    let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let (name, op) = (get("name"), get("op"));
    let mut spec = match merged(&f) {
        Ok(s) => s,
        Err(e) => return service_error(drover_core::Error::BadRequest(e)),
    };
    if op != "check" {
        apply_op(&mut spec, &op);
        return render(StatusCode::OK, &view(&v, &name, &spec, String::new()));
    }
    let parsed = match serde_json::from_value::<PipelineSpec>(spec.clone()) {
        Ok(p) => p,
        Err(e) => {
            let mut page = view(&v, &name, &spec, e.to_string());
            if let Some((id, path)) = unreadable(&spec) {
                page.error = format!("{path}: {e}");
                page.mark(&id);
            }
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    // An error about one field is shown at that field, here; anything else in the YAML
    // editor, as drover apply would say it.
    let problem = match spec::validate(&parsed) {
        Err(e) => Some(e),
        Ok(()) => service::pipelines::check(&v.ctx(), &parsed).await.err(),
    };
    if let Some(e @ drover_core::Error::Invalid(_)) = problem {
        let message = crate::error::ApiError::from(e).message;
        if let Some(id) = field_of(&message) {
            let mut page = view(&v, &name, &spec, message);
            page.mark(&id);
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    }
    super::editor::preview_yaml(&v, &name, spec::to_yaml(&parsed)).await
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn an_error_names_its_field() {
        let f = |m: &str| field_of(m);
        assert_eq!(f("stages[1].tasks[0].url: the scheme is not allowed").as_deref(), Some("s1-t0-url"));
        assert_eq!(f("stages[0].tasks[2].command: unknown variable ${NOPE}").as_deref(), Some("s0-t2-command"));
        assert_eq!(f("stages[3].name: duplicate stage name \"dev\"").as_deref(), Some("s3-name"));
        assert_eq!(f("stages[0].max_failures: needs targets all or rolling").as_deref(), Some("s0-max-failures"));
        assert_eq!(f("variables.REGION: empty").as_deref(), Some("variables"));
        assert_eq!(f("stages[0].tasks: stage \"dev\" has no tasks"), None);
        assert_eq!(f("no path here"), None);
        assert_eq!(f("stages[x].name: bad"), None);
    }
}
