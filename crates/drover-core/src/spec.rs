//! Pipeline-as-code: parse and validate the YAML of `drover apply -f`.

use std::collections::HashSet;

use drover_types::PipelineSpec;

use crate::{Error, Result, validate_name};

/// Parses a pipeline YAML document. Errors name the field and, where the parser knows it, the
/// line (`stages[0].tasks[1]: unknown field `comand` ... at line 7 column 9`).
pub fn parse_yaml(text: &str) -> Result<PipelineSpec> {
    let spec: PipelineSpec = serde_yaml::from_str(text).map_err(|e| Error::Invalid(e.to_string()))?;
    validate(&spec)?;
    Ok(spec)
}

/// Checks what the types cannot: names, at least one stage, unique stage names.
pub fn validate(spec: &PipelineSpec) -> Result<()> {
    validate_name("application", &spec.application)?;
    validate_name("pipeline", spec.name())?;
    if spec.stages.is_empty() {
        return Err(Error::Invalid("stages: a pipeline needs at least one stage".into()));
    }
    let mut seen = HashSet::new();
    for (i, s) in spec.stages.iter().enumerate() {
        validate_name("stage", &s.name).map_err(|e| Error::Invalid(format!("stages[{i}].name: {e}")))?;
        validate_name("environment", &s.environment)
            .map_err(|e| Error::Invalid(format!("stages[{i}].environment: {e}")))?;
        if !seen.insert(s.name.as_str()) {
            return Err(Error::Invalid(format!("stages[{i}].name: duplicate stage name {:?}", s.name)));
        }
        if s.tasks.is_empty() {
            return Err(Error::Invalid(format!("stages[{i}].tasks: stage {:?} has no tasks", s.name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_types::{Progression, TaskSpec};

    const GOOD: &str = r#"
application: shop              # required
pipeline: shop-release
stages:
  - name: dev
    environment: dev
    tasks:
      - type: deploy
      - type: run
        command: ./smoke-test.sh
        timeout: 60s
  - name: production
    environment: production
    progression: manual
    tasks:
      - type: approval
        role: approver
      - type: http-check
        url: http://127.0.0.1:8080/health
        expect_status: 200
      - type: wait
        duration: 10s
"#;

    #[test]
    fn parses_the_design_example() {
        let s = parse_yaml(GOOD).unwrap();
        assert_eq!(s.name(), "shop-release");
        assert_eq!(s.stages[1].progression, Progression::Manual);
        assert!(matches!(s.stages[0].tasks[1], TaskSpec::Run { .. }));
        assert_eq!(s.stages[1].tasks.len(), 3);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let cases: &[(&str, &str, &str)] = &[
            ("        timeout: 60s", "        timout: 60s", "unknown field `timout`"),
            ("pipeline: shop-release", "pipeline: shop-release\ncolour: red", "unknown field `colour`"),
            ("        command: ./smoke-test.sh", "        url: http://x", "field `url` is not valid for a `run` task"),
            ("      - type: deploy", "      - type: deploi", "unknown task type `deploi`"),
            ("        duration: 10s", "        duration: ten", "invalid duration"),
        ];
        for (from, to, want) in cases {
            let text = GOOD.replace(from, to);
            let err = parse_yaml(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(err.contains("line "), "no line in: {err}");
        }
    }

    #[test]
    fn semantic_errors() {
        let dup = GOOD.replace("name: production", "name: dev");
        assert!(parse_yaml(&dup).unwrap_err().to_string().contains("duplicate stage name"));
        let bad = GOOD.replace("environment: dev", "environment: ../etc");
        assert!(parse_yaml(&bad).unwrap_err().to_string().contains("stages[0].environment"));
    }
}
