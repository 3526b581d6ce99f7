//! Pipeline-as-code: parse and validate the YAML of `drover apply -f`.

use std::collections::HashSet;

use drover_types::PipelineSpec;

use crate::{Error, Result, validate_name};

/// Parses a pipeline YAML document. Errors name the field and, where the parser knows it, the
/// line (`stages[0].tasks[1]: unknown field `comand` ... at line 7 column 9`).
pub fn parse_yaml(text: &str) -> Result<PipelineSpec> {
    if text.len() > MAX_YAML_BYTES {
        return Err(Error::Invalid(format!("a pipeline document is at most {} KiB", MAX_YAML_BYTES / 1024)));
    }
    if let Some(line) = alias_line(text) {
        return Err(Error::Invalid(format!(
            "YAML anchors and aliases (&name, *name) are not accepted in a pipeline; write the value out at line {line}"
        )));
    }
    let spec: PipelineSpec =
        serde_yaml::from_str(text).map_err(|e| Error::Invalid(Locator::new(text).refine(e.to_string())))?;
    validate(&spec).map_err(|e| Locator::new(text).locate(e))?;
    Ok(spec)
}

/// A pipeline document's size, at most.
pub const MAX_YAML_BYTES: usize = 256 * 1024;
/// Stages in a pipeline, and tasks in a stage, at most.
pub const MAX_STAGES: usize = 64;
pub const MAX_TASKS: usize = 64;

/// The first line holding a YAML anchor or alias: a value (after `key: `, `- `, `[`, `{` or `,`,
/// outside quotes) that starts with `&` or `*`. Aliases are refused because serde_yaml bounds how
/// many it follows, not how much they expand to: a small document could become gigabytes.
fn alias_line(text: &str) -> Option<usize> {
    for (n, line) in text.lines().enumerate() {
        let mut prev = ' ';
        let mut quote: Option<char> = None;
        let mut at_value = true;
        for c in line.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '#' && prev.is_whitespace() => break,
                None if (c == '"' || c == '\'') && at_value => quote = Some(c),
                None if (c == '&' || c == '*') && at_value => return Some(n + 1),
                None => {}
            }
            if quote.is_none() {
                at_value = match c {
                    ' ' | '\t' => at_value || matches!(prev, ':' | '-' | '[' | '{' | ','),
                    '[' | '{' | ',' => true,
                    _ => false,
                };
            }
            prev = c;
        }
    }
    None
}

/// The YAML of a spec, as `drover apply -f` reads it back ([`parse_yaml`] of it is the same
/// spec).
pub fn to_yaml(spec: &PipelineSpec) -> String {
    serde_yaml::to_string(spec).unwrap_or_default()
}

/// The spec of a stored pipeline (its name is written only when it differs from the
/// application's).
pub fn of_pipeline(p: &drover_types::Pipeline) -> PipelineSpec {
    PipelineSpec {
        application: p.application.clone(),
        pipeline: (p.name != p.application).then(|| p.name.clone()),
        variables: p.variables.clone(),
        stages: p.stages.clone(),
    }
}

/// Where each key of a block-style YAML document is: `stages[1].tasks[0].role` → its line.
/// Semantic errors (found after parsing, by [`validate`] or by the service) start with such a
/// path; [`Locator::locate`] adds the line. Keys inside flow collections (`[{type: deploy}]`)
/// are not tracked: they get the line of the key that holds the collection.
#[derive(Debug, Default)]
pub struct Locator {
    lines: std::collections::HashMap<String, usize>,
    /// Scalar values as written (unquoted), by path.
    values: std::collections::HashMap<String, String>,
    /// Bytes of paths remembered (bounded: the document is the caller's).
    bytes: usize,
}

/// Nesting and path bytes beyond which a document is not located further (a pipeline needs
/// about 6 levels; serde_yaml refuses more than 128).
const MAX_DEPTH: usize = 64;
const MAX_PATH_BYTES: usize = 1 << 20;

struct Frame {
    indent: isize,
    path: String,
    next_item: usize,
    is_item: bool,
    /// A block scalar (`|`, `>`): deeper lines are its text.
    scalar: bool,
}

impl Locator {
    pub fn new(text: &str) -> Locator {
        let mut loc = Locator::default();
        let mut stack = vec![Frame { indent: -1, path: String::new(), next_item: 0, is_item: false, scalar: false }];
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let body = strip_comment(raw);
            let content = body.trim_start();
            if content.is_empty() || content == "---" || content == "..." {
                continue;
            }
            let col = (body.len() - content.len()) as isize;
            if let Some(top) = stack.last()
                && top.scalar
            {
                if col > top.indent {
                    continue;
                }
                stack.pop();
            }
            if !loc.entry(&mut stack, col, content.trim_end(), line) {
                break; // deeper or larger than any pipeline: what is known so far stays
            }
        }
        loc
    }

    /// One line (`- - key: v` opens nested items, handled in a loop). False once the document
    /// is deeper or larger than a pipeline can be: locating stops there.
    fn entry(&mut self, stack: &mut Vec<Frame>, mut col: isize, mut content: &str, line: usize) -> bool {
        while content == "-" || content.starts_with("- ") {
            while stack.len() > 1 {
                let top = stack.last().expect("root");
                if top.indent > col || (top.indent == col && top.is_item) {
                    stack.pop();
                } else {
                    break;
                }
            }
            let owner = stack.last_mut().expect("root");
            let path = format!("{}[{}]", owner.path, owner.next_item);
            owner.next_item += 1;
            if !self.remember(&path, line) || stack.len() >= MAX_DEPTH {
                return false;
            }
            stack.push(Frame { indent: col, path, next_item: 0, is_item: true, scalar: false });
            let rest = content[1..].trim_start();
            if rest.is_empty() {
                return true;
            }
            col += (content.len() - rest.len()) as isize;
            content = rest;
        }
        let Some((key, value)) = split_key(content) else { return true };
        while stack.len() > 1 && stack.last().expect("root").indent >= col {
            stack.pop();
        }
        let parent = &stack.last().expect("root").path;
        let path = if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") };
        if !self.remember(&path, line) || stack.len() >= MAX_DEPTH {
            return false;
        }
        let value = value.trim();
        if !value.is_empty() {
            self.values.insert(path.clone(), value.trim_matches(|c| c == '"' || c == '\'').to_string());
        }
        if value.is_empty() {
            stack.push(Frame { indent: col, path, next_item: 0, is_item: false, scalar: false });
        } else if value.starts_with('|') || value.starts_with('>') {
            stack.push(Frame { indent: col, path, next_item: 0, is_item: false, scalar: true });
        }
        true
    }

    fn remember(&mut self, path: &str, line: usize) -> bool {
        self.bytes += path.len();
        if self.bytes > MAX_PATH_BYTES {
            return false;
        }
        self.lines.entry(path.to_string()).or_insert(line);
        true
    }

    /// The line of `path`, or of the nearest enclosing key or item that is known.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// A parser error about a task points at the task or at its list; point it at the key:
    /// for a task type's error ("field `k` is not valid for a `run` task", "unknown task type
    /// `x`", "missing field `k` for a `run` task"), the first task of that type at or after the
    /// reported line (its key `k`, else its `type`); otherwise the key under the reported path
    /// whose value the message quotes.
    pub fn refine(&self, msg: String) -> String {
        let Some((path, rest)) = msg.split_once(": ") else { return msg };
        let Some(at) = rest.rfind(" at line ") else { return msg };
        let Some(reported) = rest[at + 9..].split(' ').next().and_then(|n| n.parse::<usize>().ok()) else {
            return msg;
        };
        let between =
            |s: &str, a: &str, b: &str| s.split_once(a).and_then(|(_, r)| r.split_once(b)).map(|(x, _)| x.to_string());
        let kind = between(rest, "unknown task type `", "`").or_else(|| between(rest, " for a `", "` task"));
        let field = between(rest, "field `", "`");
        let under = |p: &str| p.strip_prefix(path).is_some_and(|r| r.starts_with('.') || r.starts_with('['));
        let best = match kind {
            Some(kind) => self
                .values
                .iter()
                .filter(|(p, v)| p.ends_with(".type") && v.as_str() == kind && under(p))
                .filter_map(|(p, _)| {
                    let item = &p[..p.len() - ".type".len()];
                    let key = field.as_ref().and_then(|k| self.lines.get(&format!("{item}.{k}")));
                    key.or_else(|| self.lines.get(p)).copied()
                })
                .filter(|l| *l >= reported)
                .min(),
            None => rest.split('"').nth(1).and_then(|quoted| {
                self.values
                    .iter()
                    .filter(|(p, v)| v.as_str() == quoted && under(p))
                    .map(|(p, _)| self.lines[p])
                    .filter(|l| *l >= reported)
                    .min()
            }),
        };
        match best {
            Some(l) => format!("{path}: {} at line {l}", &rest[..at]),
            None => msg,
        }
    }

    /// Adds ` at line N` to an invalid-spec error whose message starts with a path.
    pub fn locate(&self, e: Error) -> Error {
        let Error::Invalid(msg) = e else { return e };
        if msg.contains(" at line ") {
            return Error::Invalid(msg);
        }
        let path = msg.split(": ").next().unwrap_or("");
        let looks_like_path = !path.is_empty() && !path.contains(char::is_whitespace);
        match self.line_of(path).filter(|_| looks_like_path) {
            Some(l) => Error::Invalid(format!("{msg} at line {l}")),
            None => Error::Invalid(msg),
        }
    }
}

/// `key: value` or `key:`; keys may be quoted.
fn split_key(content: &str) -> Option<(&str, &str)> {
    let (k, v) = if let Some(k) = content.strip_suffix(':') {
        (k, "")
    } else {
        let i = content.find(": ")?;
        (&content[..i], &content[i + 2..])
    };
    let k = k.trim().trim_matches(|c| c == '"' || c == '\'');
    (!k.is_empty() && !k.starts_with(['{', '['])).then_some((k, v))
}

/// The line without a trailing `# comment` (a `#` outside quotes, at the start or after a space).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

/// Checks what the types cannot: names, at least one stage, unique stage names.
pub fn validate(spec: &PipelineSpec) -> Result<()> {
    validate_name("application", &spec.application).map_err(|e| Error::Invalid(format!("application: {e}")))?;
    let key = if spec.pipeline.is_some() { "pipeline" } else { "application" };
    validate_name("pipeline", spec.name()).map_err(|e| Error::Invalid(format!("{key}: {e}")))?;
    if spec.stages.is_empty() {
        return Err(Error::Invalid("stages: a pipeline needs at least one stage".into()));
    }
    if spec.stages.len() > MAX_STAGES {
        return Err(Error::Invalid(format!("stages: at most {MAX_STAGES} stages")));
    }
    if let Some(i) = spec.stages.iter().position(|s| s.tasks.len() > MAX_TASKS) {
        return Err(Error::Invalid(format!("stages[{i}].tasks: at most {MAX_TASKS} tasks in a stage")));
    }
    crate::vars::validate_map("variables", &spec.variables).map_err(Error::Invalid)?;
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
        validate_targets(i, s)?;
        crate::vars::validate_map(&format!("stages[{i}].variables"), &s.variables).map_err(Error::Invalid)?;
        for (j, t) in s.tasks.iter().enumerate() {
            crate::vars::task_references(t).map_err(|e| Error::Invalid(format!("stages[{i}].tasks[{j}].{e}")))?;
            if let drover_types::TaskSpec::Webhook { url, .. } = t
                && authority(url).contains('$')
            {
                return Err(Error::Invalid(format!(
                    "stages[{i}].tasks[{j}].url: the scheme, host and port of a webhook cannot be variables (the orchestrator's outbound policy checks them when the pipeline is applied)"
                )));
            }
        }
    }
    Ok(())
}

/// The `host:port` of a URL (empty when it has no `scheme://`).
pub fn authority(url: &str) -> &str {
    url.split_once("://").map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or("")).unwrap_or("")
}

/// Most labels a fleet stage's agent selector may name.
pub const MAX_SELECTOR_LABELS: usize = 32;

fn validate_targets(i: usize, s: &drover_types::StageSpec) -> Result<()> {
    use drover_types::Targets;
    let bad = |key: &str, why: &str| Err(Error::Invalid(format!("stages[{i}].{key}: {why}")));
    if s.batch.is_some() && s.targets != Targets::Rolling {
        return bad("batch", "only a rolling stage has batches (targets: rolling)");
    }
    if s.max_failures.is_some() && !s.is_fleet() {
        return bad("max_failures", "needs targets: all or rolling (a stage with one target stops at its failure)");
    }
    if let Some(sel) = &s.agents {
        if !s.is_fleet() {
            return bad("agents", "selecting agents needs targets: all or rolling");
        }
        if sel.labels.len() > MAX_SELECTOR_LABELS {
            return bad("agents", &format!("at most {MAX_SELECTOR_LABELS} labels"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod round_trip {
    use super::*;

    #[test]
    fn anchors_and_aliases_are_refused() {
        let bomb = "application: a\nstages:\n  - name: s\n    environment: dev\n    tasks: &t\n      - type: deploy\n  - name: t\n    environment: dev\n    tasks: *t\n";
        let e = parse_yaml(bomb).unwrap_err().to_string();
        assert!(e.contains("anchors and aliases") && e.contains("line 5"), "{e}");
        assert_eq!(alias_line("a: [1, *x]"), Some(1));
        assert_eq!(alias_line("- &anchor value"), Some(1));
        // Not aliases: inside a value, quoted, or commented.
        for ok in [
            "command: ls *.txt",
            "command: \"echo a: *b\"",
            "command: 'x & y'",
            "command: a && b",
            "url: https://x/?a=1&b=2",
            "key: value # *not an alias",
            "command: [\"sh\", \"-c\", \"echo *\"]",
        ] {
            assert_eq!(alias_line(ok), None, "{ok}");
        }
    }

    /// What the portal's editor shows is what `drover apply` reads: every task type, fleet
    /// fields, variables and durations survive YAML → spec → YAML → spec.
    #[test]
    fn yaml_round_trips() {
        let text = r#"
application: shop
pipeline: shop-eu
variables:
  REGION: eu-west-1
stages:
  - name: dev
    environment: dev
    dispatch_timeout: 5m
    variables:
      LEVEL: debug
    tasks:
      - type: deploy
      - type: run
        command: echo "${REGION}"
        timeout: 30s
      - type: run
        command: ["./bin/check", "--fast"]
      - type: http-check
        url: https://shop.example.com/health
        expect_status: 200
  - name: production
    environment: production
    progression: manual
    targets: rolling
    batch: 25%
    max_failures: 1
    tasks:
      - type: approval
        role: approver
        approvals: 2
        timeout: 1h
        on_timeout: abort
      - type: wait
        duration: 10s
      - type: webhook
        url: https://hooks.example.com/deployed
        method: POST
        body: '{"version": "${DROVER_VERSION}"}'
      - type: deploy
"#;
        let spec = parse_yaml(text).unwrap();
        let yaml = to_yaml(&spec);
        let again = parse_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again, spec, "{yaml}");
        assert_eq!(to_yaml(&again), yaml, "stable");
    }
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
        // (replace, with, the error says, the line of the offending key)
        let cases: &[(&str, &str, &str, usize)] = &[
            ("        timeout: 60s", "        timout: 60s", "unknown field `timout`", 11),
            ("pipeline: shop-release", "pipeline: shop-release\ncolour: red", "unknown field `colour`", 4),
            (
                "        command: ./smoke-test.sh",
                "        url: http://x",
                "field `url` is not valid for a `run` task",
                10,
            ),
            ("      - type: deploy", "      - type: deploi", "unknown task type `deploi`", 8),
            ("        duration: 10s", "        duration: ten", "invalid duration", 22),
            (
                "        expect_status: 200",
                "        expect_status: 200\n        role: x",
                "field `role` is not valid",
                21,
            ),
        ];
        for (from, to, want, line) in cases {
            let text = GOOD.replace(from, to);
            let err = parse_yaml(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(err.contains(&format!("at line {line}")), "{want}: want line {line} in: {err}");
        }
    }

    #[test]
    fn semantic_errors_name_their_line() {
        let empty = "application: a\nstages:\n  - name: dev\n    environment: dev\n    tasks: []\n";
        let absent = "application: a\nstages:\n  - name: dev\n    environment: dev\n";
        let none = "application: a\nstages: []\n";
        // (document, the error says, at line)
        let cases: Vec<(String, &str, usize)> = vec![
            (GOOD.replace("name: production", "name: dev"), "stages[1].name: duplicate stage name \"dev\"", 12),
            (GOOD.replacen("environment: dev", "environment: ../etc", 1), "stages[0].environment:", 6),
            (GOOD.replace("application: shop ", "application: \"a b\" "), "application:", 2),
            (empty.into(), "stages[0].tasks: stage \"dev\" has no tasks", 5),
            (absent.into(), "stages[0].tasks: stage \"dev\" has no tasks", 3),
            (none.into(), "stages: a pipeline needs at least one stage", 2),
        ];
        for (text, want, line) in cases {
            let err = parse_yaml(&text).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(err.ends_with(&format!("at line {line}")), "{want}: {err}");
        }
    }

    #[test]
    fn the_locator_follows_block_and_compact_yaml() {
        let text = "application: a   # comment\nstages:\n- name: dev\n  environment: dev\n  tasks:\n  - type: run\n    command: |\n      echo: not a key\n    timeout: 5s\n  - {type: deploy}\n- name: prod\n  environment: prod\n  tasks: [{type: deploy}, {type: approval, role: x}]\n";
        let l = Locator::new(text);
        assert_eq!(l.line_of("application"), Some(1));
        assert_eq!(l.line_of("stages[0].tasks[0].command"), Some(7));
        assert_eq!(l.line_of("stages[0].tasks[0].timeout"), Some(9));
        assert_eq!(l.line_of("stages[0].tasks[1].type"), Some(10), "a flow item: its line");
        assert_eq!(l.line_of("stages[1].name"), Some(11));
        assert_eq!(l.line_of("stages[1].tasks[1].role"), Some(13), "inside a flow sequence: the key holding it");
        assert_eq!(l.line_of("nothing"), None);
        let e = l.locate(Error::Invalid("stages[1].tasks[1].role: unknown role \"x\"".into()));
        assert_eq!(e.to_string(), "stages[1].tasks[1].role: unknown role \"x\" at line 13");
        let free = l.locate(Error::Invalid("environment prod does not accept: x".into()));
        assert!(!free.to_string().contains("line"), "no path, no line: {free}");
    }

    #[test]
    fn hostile_documents_are_located_in_bounded_work() {
        // Nested items on one line, and very many keys: bounded depth and memory, no recursion.
        let deep = format!("application: a\nstages:\n{}x\n", "- ".repeat(200_000));
        let l = Locator::new(&deep);
        assert!(l.lines.len() <= MAX_DEPTH + 2 && l.bytes <= MAX_PATH_BYTES, "{}", l.lines.len());
        assert!(parse_yaml(&deep).is_err());
        let wide: String = (0..200_000).map(|i| format!("k{i}: v\n")).collect();
        let l = Locator::new(&wide);
        assert!(l.bytes <= MAX_PATH_BYTES + 16);
        let odd = "application: é\n  - ü: ß\n- - :\n-\n:\n'': x\n\u{2028}stages: [\n";
        let _ = Locator::new(odd).locate(Error::Invalid("stages[0]: x".into()));
        let _ = Locator::new(odd).refine("stages: field `ü` is not valid for a `é` task at line 1 column 1".into());
    }

    #[test]
    fn fleet_settings_belong_to_fleet_stages() {
        let stage = |extra: &str| {
            format!(
                "application: a\nstages:\n  - name: prod\n    environment: prod\n{extra}    tasks: [{{type: deploy}}]\n"
            )
        };
        // (settings, the error says (empty: valid), at line)
        let cases: &[(&str, &str, usize)] = &[
            ("    targets: rolling\n    batch: 2\n    max_failures: 1\n", "", 0),
            ("    targets: rolling\n    batch: 25%\n", "", 0),
            ("    targets: all\n    agents: {labels: {region: eu}}\n", "", 0),
            ("    targets: all\n    batch: 2\n", "stages[0].batch: only a rolling stage has batches", 6),
            ("    max_failures: 1\n", "stages[0].max_failures: needs targets", 5),
            ("    agents: {labels: {region: eu}}\n", "stages[0].agents: selecting agents needs targets", 5),
            ("    targets: rolling\n    batch: 0\n", "invalid batch \"0\"", 6),
            ("    targets: rolling\n    batch: 101%\n", "invalid batch", 6),
            ("    targets: rolling\n    batch: two\n", "invalid batch", 6),
            ("    targets: some\n", "unknown variant `some`", 5),
            ("    targets: all\n    agents: {region: eu}\n", "unknown field `region`", 6),
        ];
        for (extra, want, line) in cases {
            let r = parse_yaml(&stage(extra));
            if want.is_empty() {
                r.unwrap_or_else(|e| panic!("{extra}: {e}"));
                continue;
            }
            let err = r.map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(want), "{extra}: {err}");
            assert!(err.contains(&format!("at line {line}")), "{extra}: want line {line}: {err}");
        }
        let s = parse_yaml(&stage("    targets: rolling\n    batch: 25%\n")).unwrap();
        assert_eq!(s.stages[0].batch_size(10), 3);
    }

    #[test]
    fn variables_are_checked_with_their_lines() {
        let doc = |vars: &str, command: &str| {
            format!(
                "application: a\nvariables:\n  GREETING: hello\n{vars}stages:\n  - name: dev\n    environment: dev\n    variables:\n      TARGET: world\n    tasks:\n      - type: run\n        command: {command}\n      - type: webhook\n        url: https://ci.example/job/${{GREETING}}\n"
            )
        };
        parse_yaml(&doc("", "echo ${GREETING} ${TARGET} $${HOME}")).unwrap();
        // (extra pipeline variables, command, the error says, at line)
        let cases: &[(&str, &str, &str, usize)] = &[
            ("  1BAD: x\n", "echo", "variables.1BAD: invalid variable name", 4),
            ("  DROVER_AGENT: x\n", "echo", "names starting with DROVER_ are Drover's own", 4),
            ("", "echo ${TARGET", "stages[0].tasks[0].command: an unclosed ${", 11),
            ("", "echo ${A:-x}", "is not a variable reference", 11),
        ];
        for (vars, command, want, line) in cases {
            let err = parse_yaml(&doc(vars, command)).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(err.ends_with(&format!("at line {line}")), "{want}: want line {line}: {err}");
        }
        let host = doc("", "echo").replace("https://ci.example/job/${GREETING}", "https://${HOST}/job");
        let err = parse_yaml(&host).unwrap_err().to_string();
        assert!(
            err.contains("stages[0].tasks[1].url: the scheme, host and port of a webhook cannot be variables"),
            "{err}"
        );
        assert!(err.ends_with("at line 13"), "{err}");
    }

    #[test]
    fn semantic_errors() {
        let dup = GOOD.replace("name: production", "name: dev");
        assert!(parse_yaml(&dup).unwrap_err().to_string().contains("duplicate stage name"));
        let bad = GOOD.replace("environment: dev", "environment: ../etc");
        assert!(parse_yaml(&bad).unwrap_err().to_string().contains("stages[0].environment"));
    }
}
