//! The pipeline editor: a pipeline as YAML — exactly what `drover apply -f` reads, and what
//! it writes back — checked and shown as a diff against the stored pipeline before it is saved.
//! Errors name the field and its line, as `drover apply` does.

use askama::Template;
use axum::extract::{Form, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use drover_core::spec;
use serde::Deserialize;

use super::pages::{Chrome, chrome};
use super::{Viewer, diff, render, service_error};
use crate::service;

#[derive(Template)]
#[template(path = "portal/editor.html")]
pub struct EditorPage {
    pub chrome: Chrome,
    /// The pipeline being edited (empty for a new one).
    pub name: String,
    pub yaml: String,
    pub error: String,
    /// The line the error names, if any.
    pub error_line: Option<usize>,
    /// The lines around it, numbered.
    pub context: Vec<(usize, String)>,
    pub diff: Vec<diff::Line>,
    pub previewed: bool,
    pub unchanged: bool,
    /// The stored pipeline's `updated_at` (ms) the diff was made against, `0`: none stored.
    /// Saving refuses when it has changed since (someone else saved meanwhile).
    pub seen: i64,
    pub creates_environments: String,
}

fn editor(v: &Viewer, name: &str, yaml: String) -> EditorPage {
    EditorPage {
        chrome: chrome(v, if name.is_empty() { "New pipeline".to_string() } else { format!("Edit {name}") }),
        name: name.to_string(),
        yaml,
        error: String::new(),
        error_line: None,
        context: Vec::new(),
        diff: Vec::new(),
        previewed: false,
        seen: 0,
        unchanged: false,
        creates_environments: String::new(),
    }
}

const NEW_PIPELINE: &str =
    "application: my-app\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: deploy\n";

/// `GET /portal/pipelines/{name}/edit`.
pub async fn edit(v: Viewer, Path(name): Path<String>) -> Response {
    match service::pipelines::get(&v.ctx(), &name).await {
        Ok(p) => render(StatusCode::OK, &editor(&v, &name, spec::to_yaml(&spec::of_pipeline(&p)))),
        Err(e) => service_error(e),
    }
}

/// `GET /portal/new-pipeline`.
pub async fn new(v: Viewer) -> Response {
    render(StatusCode::OK, &editor(&v, "", NEW_PIPELINE.to_string()))
}

#[derive(Deserialize)]
pub struct YamlForm {
    yaml: String,
    #[serde(default)]
    name: String,
    /// Save only: the stored pipeline's `updated_at` the preview showed the diff against.
    #[serde(default)]
    seen: Option<i64>,
}

/// `at line 13` in an error message.
fn line_of(message: &str) -> Option<usize> {
    let at = message.rfind("at line ")? + "at line ".len();
    message[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The editor again, with the error at its line.
fn with_error(mut page: EditorPage, e: drover_core::Error) -> Response {
    let api = crate::error::ApiError::from(e);
    let status = api.status();
    page.error_line = line_of(&api.message);
    if let Some(n) = page.error_line {
        page.context = page
            .yaml
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.to_string()))
            .filter(|(i, _)| i.abs_diff(n) <= 2)
            .collect();
    }
    page.error = api.message;
    render(status, &page)
}

/// Parsed and checked as applying it would be, or the error (with its line where the service
/// names a key).
async fn checked(
    v: &Viewer,
    yaml: &str,
) -> Result<(drover_types::PipelineSpec, Option<drover_types::Pipeline>, Vec<String>), drover_core::Error> {
    let spec = spec::parse_yaml(yaml)?;
    let (existing, envs) = service::pipelines::check(&v.ctx(), &spec).await.map_err(|e| match e {
        drover_core::Error::Invalid(_) => spec::Locator::new(yaml).locate(e),
        e => e,
    })?;
    Ok((spec, existing, envs))
}

/// `POST /portal/pipelines/preview`: the checks and the diff against the stored pipeline.
pub async fn preview(v: Viewer, Form(f): Form<YamlForm>) -> Response {
    preview_yaml(&v, &f.name, f.yaml).await
}

/// The editor with the checks and the diff of `yaml` (also what the form's "Check" shows).
pub(crate) async fn preview_yaml(v: &Viewer, name: &str, yaml: String) -> Response {
    let mut page = editor(v, name, yaml.clone());
    match checked(v, &yaml).await {
        Ok((spec, existing, envs)) => {
            let before = existing.as_ref().map(|p| spec::to_yaml(&spec::of_pipeline(p))).unwrap_or_default();
            let after = spec::to_yaml(&spec);
            page.unchanged = existing.is_some() && before == after;
            page.diff = diff::lines(&before, &after);
            page.name = spec.name().to_string();
            page.creates_environments = envs.join(", ");
            page.previewed = true;
            page.seen = existing.as_ref().map(|p| p.updated_at.0).unwrap_or(0);
            render(StatusCode::OK, &page)
        }
        Err(e) => with_error(page, e),
    }
}

/// `POST /portal/pipelines/save`: applied as `drover apply -f` would apply it.
pub async fn save(v: Viewer, Form(f): Form<YamlForm>) -> Response {
    let page = editor(&v, &f.name, f.yaml.clone());
    let spec = match spec::parse_yaml(&f.yaml) {
        Ok(s) => s,
        Err(e) => return with_error(page, e),
    };
    // Saved as previewed, or not at all: a change saved meanwhile is never overwritten blind.
    let now = match service::pipelines::get(&v.ctx(), spec.name()).await {
        Ok(p) => p.updated_at.0,
        Err(drover_core::Error::NotFound(_)) => 0,
        Err(e) => return with_error(page, e),
    };
    if f.seen != Some(now) {
        let e = drover_core::Error::Conflict(format!(
            "pipeline {} changed since this preview (or was never previewed); check again to see the changes",
            spec.name()
        ));
        return with_error(page, e);
    }
    match service::pipelines::apply(&v.ctx(), spec).await {
        Ok(r) => Redirect::to(&format!("/portal/pipelines/{}", r.pipeline.name)).into_response(),
        Err(e @ drover_core::Error::Invalid(_)) => with_error(page, spec::Locator::new(&f.yaml).locate(e)),
        Err(e) => with_error(page, e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line_an_error_names() {
        assert_eq!(super::line_of("stages[0].tasks[0].command: unknown variable ${NOPE} at line 13"), Some(13));
        assert_eq!(super::line_of("unknown field `comand` at line 7 column 9"), Some(7));
        assert_eq!(super::line_of("no line here"), None);
    }
}
