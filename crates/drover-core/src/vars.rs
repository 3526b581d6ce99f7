//! Variables: their names, `${NAME}` references in task fields, precedence, and the masking of
//! secret values in what is logged or shown. Pure: the store and the master key are the
//! server's.
//!
//! - A name is `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_NAME`] characters; names starting with
//!   `DROVER_` are Drover's own (`DROVER_AGENT`, ...) and cannot be set.
//! - `${NAME}` in a task field (a `run` command, an `http-check` or `webhook` URL, a webhook
//!   body) is replaced by the variable's value; `$${` writes a literal `${`. Anything else
//!   after `${` is an error, so that a typo is not sent to a shell as is. `${DROVER_...}` is
//!   left as written: those are the environment variables the agent sets for the task.
//! - A stage's variables override its environment's, which override the pipeline's.

use std::borrow::Cow;
use std::collections::BTreeMap;

use drover_types::{CommandSpec, TaskSpec};

pub const MAX_NAME: usize = 64;
/// Largest value (an environment variable of a process; a certificate fits).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Most variables in one map (a pipeline's, a stage's, an environment's).
pub const MAX_VARIABLES: usize = 256;
/// Most bytes (names and values) in one map: a stage's variables, all of them together, stay
/// far below what a process environment may hold.
pub const MAX_MAP_BYTES: usize = 64 * 1024;
/// Shorter secrets are refused: masking `ab` would mask half of every log.
pub const MIN_SECRET_CHARS: usize = 4;
/// What a secret's value is replaced by.
pub const MASK: &str = "***";

/// Checks a variable's name; the error says why.
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > MAX_NAME {
        return Err(format!(
            "invalid variable name {name:?}: letters, digits and _ (not starting with a digit), at most {MAX_NAME} characters"
        ));
    }
    if name.to_ascii_uppercase().starts_with("DROVER_") {
        return Err(format!("variable name {name:?}: names starting with DROVER_ are Drover's own"));
    }
    Ok(())
}

/// Checks a variable's value (it becomes an environment variable: no NUL).
pub fn validate_value(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("variable {name}: the value is longer than {MAX_VALUE_BYTES} bytes"));
    }
    if value.contains('\0') {
        return Err(format!("variable {name}: the value contains a NUL byte"));
    }
    Ok(())
}

/// Checks a map of variables as written in a pipeline; errors start with `key.NAME: `.
pub fn validate_map(key: &str, vars: &BTreeMap<String, String>) -> Result<(), String> {
    if vars.len() > MAX_VARIABLES {
        return Err(format!("{key}: at most {MAX_VARIABLES} variables"));
    }
    if vars.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_MAP_BYTES {
        return Err(format!("{key}: the variables come to more than {} KiB", MAX_MAP_BYTES / 1024));
    }
    for (k, v) in vars {
        validate_name(k).map_err(|e| format!("{key}.{k}: {e}"))?;
        validate_value(k, v).map_err(|e| format!("{key}.{k}: {e}"))?;
    }
    Ok(())
}

/// A field's text in pieces: literal text and variable references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Ref(&'a str),
}

/// Splits `text` at its `${NAME}` references (`$${` is a literal `${`).
pub fn parse(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            // `$${`: the text up to and without the first `$`, then `${` literally.
            out.push(Piece::Text(&rest[..i - 1]));
            out.push(Piece::Text("${"));
            rest = &rest[i + 2..];
            continue;
        }
        out.push(Piece::Text(&rest[..i]));
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err("an unclosed ${ (write $${ for a literal ${)".into());
        };
        let name = &after[..end];
        if name.starts_with("DROVER_") && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            // Drover's own variables are the process environment's: left for the shell.
            out.push(Piece::Text(&rest[i..i + 2 + end + 1]));
            rest = &after[end + 1..];
            continue;
        }
        if validate_name(name).is_err() {
            let shown: String = name.chars().take(MAX_NAME).collect();
            return Err(format!(
                "${{{shown}}} is not a variable reference (names are letters, digits and _; write $${{ for a literal ${{)"
            ));
        }
        out.push(Piece::Ref(name));
        rest = &after[end + 1..];
    }
    out.push(Piece::Text(rest));
    out.retain(|p| *p != Piece::Text(""));
    Ok(out)
}

/// The names `text` refers to, in order, each once.
pub fn references(text: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    for p in parse(text)? {
        if let Piece::Ref(n) = p
            && !names.contains(&n)
        {
            names.push(n);
        }
    }
    Ok(names)
}

/// `text` with each reference replaced by what `value` says (`None`: an unknown variable).
pub fn substitute(text: &str, mut value: impl FnMut(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for p in parse(text)? {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Ref(n) => out.push_str(&value(n).ok_or_else(|| format!("unknown variable ${{{n}}}"))?),
        }
    }
    Ok(out)
}

/// The fields of a task that take references: (key, text). A command given as a list has one
/// entry per item, all under `command`.
pub fn fields(t: &TaskSpec) -> Vec<(&'static str, &str)> {
    match t {
        TaskSpec::Run { command: CommandSpec::Shell(s), .. } => vec![("command", s)],
        TaskSpec::Run { command: CommandSpec::Exec(v), .. } => v.iter().map(|s| ("command", s.as_str())).collect(),
        TaskSpec::HttpCheck { url, .. } => vec![("url", url)],
        TaskSpec::Webhook { url, body, .. } => {
            let mut f = vec![("url", url.as_str())];
            f.extend(body.as_deref().map(|b| ("body", b)));
            f
        }
        _ => vec![],
    }
}

/// Every (key, name) a task refers to; errors start with the key.
pub fn task_references(t: &TaskSpec) -> Result<Vec<(&'static str, &str)>, String> {
    let mut out = Vec::new();
    for (key, text) in fields(t) {
        for n in references(text).map_err(|e| format!("{key}: {e}"))? {
            if !out.iter().any(|(_, m)| *m == n) {
                out.push((key, n));
            }
        }
    }
    Ok(out)
}

/// The task with its references replaced; errors start with the key.
///
/// A command run by the shell keeps `${NAME}` as written (after checking that NAME is
/// defined): every variable is in the process environment, so the shell expands it, with the
/// shell's quoting — a value with quotes, `$` or `;` in it cannot change the command, and a
/// secret does not appear in the command line other processes can read. `$${` still becomes
/// `${`. Everywhere else (a command given as a list, URLs, bodies) the value is put in place.
pub fn substitute_task(t: &TaskSpec, mut value: impl FnMut(&str) -> Option<String>) -> Result<TaskSpec, String> {
    let mut sub = |key: &str, s: &str| substitute(s, &mut value).map_err(|e| format!("{key}: {e}"));
    Ok(match t {
        TaskSpec::Run { command, timeout } => TaskSpec::Run {
            command: match command {
                CommandSpec::Shell(s) => CommandSpec::Shell(
                    substitute(s, |n| value(n).map(|_| format!("${{{n}}}"))).map_err(|e| format!("command: {e}"))?,
                ),
                CommandSpec::Exec(v) => {
                    CommandSpec::Exec(v.iter().map(|s| sub("command", s)).collect::<Result<_, _>>()?)
                }
            },
            timeout: *timeout,
        },
        TaskSpec::HttpCheck { url, expect_status, timeout } => {
            TaskSpec::HttpCheck { url: sub("url", url)?, expect_status: *expect_status, timeout: *timeout }
        }
        TaskSpec::Webhook { url, method, auth_profile, expect_status, body, timeout } => TaskSpec::Webhook {
            url: sub("url", url)?,
            method: method.clone(),
            auth_profile: auth_profile.clone(),
            expect_status: *expect_status,
            body: body.as_deref().map(|b| sub("body", b)).transpose()?,
            timeout: *timeout,
        },
        other => other.clone(),
    })
}

/// The variables a stage sees: the pipeline's, overridden by the environment's, overridden by
/// the stage's own.
pub fn merge<V: Clone>(
    pipeline: &BTreeMap<String, V>,
    environment: &BTreeMap<String, V>,
    stage: &BTreeMap<String, V>,
) -> BTreeMap<String, V> {
    let mut out = pipeline.clone();
    out.extend(environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    out.extend(stage.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// Replaces secret values, and the forms a command may print them in (base64 at each of the
/// three alignments, standard and URL-safe, also wrapped at 64 and 76 columns; percent-encoded
/// with any set of characters left as they are), by [`MASK`]. A secret of several lines is also
/// masked line by line (a log line is one line). One pass over a line finds every literal form
/// (Aho-Corasick, leftmost-longest); a line with `%XX` in it is also decoded and searched, and
/// what matches there is masked where it came from (decode and compare: no list of encodings).
#[derive(Clone, Default)]
pub struct Masker {
    finder: Option<aho_corasick::AhoCorasick>,
    forms: usize,
    /// A secret has a space, which form encoding writes as `+`.
    spaces: bool,
}

/// Its forms are the secrets: `Debug` shows how many.
impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} forms)", self.forms)
    }
}

/// Checks a secret's value: it, and each of its lines that is not blank, must be long enough
/// to be masked.
pub fn validate_secret(name: &str, value: &str) -> Result<(), String> {
    let short = value.trim().chars().count() < MIN_SECRET_CHARS
        || value.lines().map(str::trim).any(|l| !l.is_empty() && l.chars().count() < MIN_SECRET_CHARS);
    if short {
        return Err(format!(
            "variable {name}: a secret (and each line of it) needs at least {MIN_SECRET_CHARS} characters besides spaces (a shorter one could not be masked in logs)"
        ));
    }
    Ok(())
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut needles = Vec::new();
        for s in secrets {
            let mut parts = vec![s];
            if s.contains('\n') || s.trim() != s {
                parts.push(s.trim());
                parts.extend(s.lines().map(str::trim));
            }
            for p in parts {
                if p.trim().chars().count() < MIN_SECRET_CHARS {
                    continue; // blank or too short: it would mask what is not secret
                }
                needles.push(p.to_string());
                for k in 0..3 {
                    let b = base64_at(p.as_bytes(), k);
                    if b.len() >= MIN_SECRET_CHARS {
                        let url_safe = b.replace('+', "-").replace('/', "_");
                        if url_safe != b {
                            needles.push(url_safe);
                        }
                        needles.push(b);
                    }
                }
                // `base64` wraps at 76 columns, PEM at 64: each whole line of the encoding.
                let whole = base64_at(p.as_bytes(), 0);
                for width in [64, 76] {
                    if whole.len() > width {
                        let bytes = whole.as_bytes();
                        needles.extend(
                            bytes
                                .chunks(width)
                                .filter(|c| c.len() >= MIN_SECRET_CHARS)
                                .map(|c| String::from_utf8_lossy(c).into_owned()),
                        );
                    }
                }
            }
        }
        needles.sort();
        needles.dedup();
        let forms = needles.len();
        let spaces = needles.iter().any(|n| n.contains(' '));
        let finder = (!needles.is_empty()).then(|| {
            aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&needles)
                .expect("a few thousand literal forms")
        });
        Masker { finder, forms, spaces }
    }

    /// Where, in `line`, a percent-decoded reading of it holds a secret form: byte ranges of
    /// `line`, each on character boundaries. Read twice when a secret has a space: `+` as
    /// itself, and as a space (form encoding).
    fn encoded_spans(&self, f: &aho_corasick::AhoCorasick, line: &str) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        if !(line.contains('%') || self.spaces && line.contains('+')) {
            return spans;
        }
        for plus in [false, true] {
            if plus && !self.spaces {
                continue;
            }
            let Some((decoded, from)) = percent_decoded(line, plus) else { continue };
            for m in f.find_iter(decoded.as_slice()) {
                let (mut start, mut end) = (from[m.start()].0, from[m.end() - 1].1);
                while !line.is_char_boundary(start) {
                    start -= 1;
                }
                while !line.is_char_boundary(end) {
                    end += 1;
                }
                spans.push((start, end));
            }
        }
        spans.sort_unstable();
        spans
    }

    pub fn is_empty(&self) -> bool {
        self.finder.is_none()
    }

    /// `line` with every secret form replaced (borrowed when there is none).
    pub fn mask<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let Some(f) = &self.finder else { return Cow::Borrowed(line) };
        let spans = self.encoded_spans(f, line);
        let line: Cow<'a, str> = if spans.is_empty() {
            Cow::Borrowed(line)
        } else {
            let mut out = String::with_capacity(line.len());
            let mut at = 0;
            for (start, end) in spans {
                if end <= at {
                    continue;
                }
                if start >= at {
                    out.push_str(&line[at..start]);
                    out.push_str(MASK);
                }
                at = end;
            }
            out.push_str(&line[at..]);
            Cow::Owned(out)
        };
        if !f.is_match(line.as_ref()) {
            return line;
        }
        let mut out = String::with_capacity(line.len());
        f.replace_all_with(line.as_ref(), &mut out, |_, _, dst| {
            dst.push_str(MASK);
            true
        });
        Cow::Owned(out)
    }

    /// Masks in place.
    pub fn mask_string(&self, s: &mut String) {
        if let Cow::Owned(m) = self.mask(s) {
            *s = m;
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The base64 characters that only `data` decides when it starts `k` bytes into the encoded
/// stream (0, 1 or 2): the characters mixing in neighbouring bytes are left off.
fn base64_at(data: &[u8], k: usize) -> String {
    let mut bytes = vec![0u8; k];
    bytes.extend_from_slice(data);
    let mut chars = Vec::with_capacity(bytes.len() * 4 / 3 + 4);
    for chunk in bytes.chunks(3) {
        let n =
            (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            chars.push(B64[(n >> (18 - 6 * i)) as usize & 63]);
        }
    }
    // Bits [8k, 8(k + len)) are the data's: whole characters inside them only.
    let start = (8 * k).div_ceil(6);
    let end = (8 * bytes.len()) / 6;
    if start >= end {
        return String::new();
    }
    String::from_utf8(chars[start..end].to_vec()).expect("base64 is ASCII")
}

/// A decoded reading of a line: its bytes, and the byte range of the line each came from.
type Decoded = (Vec<u8>, Vec<(usize, usize)>);

/// `line` with every `%XX` (either case) decoded, and `+` read as a space when `plus`, with
/// the byte range of `line` each decoded byte came from; `None` when nothing decodes.
fn percent_decoded(line: &str, plus: bool) -> Option<Decoded> {
    let b = line.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let (mut out, mut from) = (Vec::with_capacity(b.len()), Vec::with_capacity(b.len()));
    let (mut i, mut changed) = (0, false);
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c)))
        {
            out.push(h << 4 | l);
            from.push((i, i + 3));
            i += 3;
            changed = true;
            continue;
        }
        if plus && b[i] == b'+' {
            out.push(b' ');
            changed = true;
        } else {
            out.push(b[i]);
        }
        from.push((i, i + 1));
        i += 1;
    }
    changed.then_some((out, from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["A", "_x", "DB_URL", "a1", &"x".repeat(MAX_NAME)] {
            validate_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "1A", "A-B", "A B", "é", "DROVER_AGENT", "drover_x", &"x".repeat(MAX_NAME + 1)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_value("A", "x\0y").is_err());
        assert!(validate_value("A", &"x".repeat(MAX_VALUE_BYTES + 1)).is_err());
    }

    #[test]
    fn references_and_substitution() {
        let vars: BTreeMap<&str, &str> = [("A", "1"), ("B_2", "two"), ("EMPTY", "")].into();
        let get = |n: &str| vars.get(n).map(|v| v.to_string());
        // (text, substituted (or the error contains))
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("plain", Ok("plain")),
            ("${A}", Ok("1")),
            ("x${A}y${B_2}z${A}", Ok("x1ytwoz1")),
            ("$${A}", Ok("${A}")),
            ("$$${A}", Ok("$${A}")),
            ("$A $$ ${EMPTY}|", Ok("$A $$ |")),
            ("for i in 1 2; do echo $${i}; done", Ok("for i in 1 2; do echo ${i}; done")),
            ("${A", Err("unclosed")),
            ("${A-default}", Err("is not a variable reference")),
            ("${}", Err("is not a variable reference")),
            ("${NOPE}", Err("unknown variable ${NOPE}")),
            ("cd ${DROVER_RELEASE_DIR}/${A}", Ok("cd ${DROVER_RELEASE_DIR}/1")),
        ];
        for (text, want) in cases {
            match (substitute(text, get), want) {
                (Ok(got), Ok(w)) => assert_eq!(&got, w, "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, w) => panic!("{text}: got {got:?}, want {w:?}"),
            }
        }
        assert_eq!(references("${A}${B_2}${A}$${C}").unwrap(), vec!["A", "B_2"]);
    }

    #[test]
    fn precedence_is_stage_then_environment_then_pipeline() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let p = m(&[("A", "pipeline"), ("B", "pipeline"), ("C", "pipeline")]);
        let e = m(&[("B", "environment"), ("C", "environment")]);
        let s = m(&[("C", "stage")]);
        let got = merge(&p, &e, &s);
        assert_eq!(got, m(&[("A", "pipeline"), ("B", "environment"), ("C", "stage")]));
    }

    #[test]
    fn task_fields_are_substituted_and_located() {
        let t: TaskSpec = serde_json::from_value(serde_json::json!({
            "type": "webhook", "url": "https://ci.example/job/${JOB}", "body": "{\"token\": \"${TOKEN}\"}"
        }))
        .unwrap();
        assert_eq!(task_references(&t).unwrap(), vec![("url", "JOB"), ("body", "TOKEN")]);
        let got = substitute_task(&t, |n| Some(n.to_lowercase())).unwrap();
        assert_eq!(fields(&got), vec![("url", "https://ci.example/job/job"), ("body", "{\"token\": \"token\"}")]);
        let e = substitute_task(&t, |_| None).unwrap_err();
        assert_eq!(e, "url: unknown variable ${JOB}");
        let run = TaskSpec::Run { command: CommandSpec::Exec(vec!["echo".into(), "${X".into()]), timeout: None };
        assert!(task_references(&run).unwrap_err().starts_with("command: an unclosed"));
        // A list is not run by a shell: values go in place. A shell expands them itself.
        let exec = TaskSpec::Run { command: CommandSpec::Exec(vec!["echo".into(), "${X}".into()]), timeout: None };
        let got = substitute_task(&exec, |_| Some("a\"; rm -rf /".into())).unwrap();
        assert_eq!(fields(&got), vec![("command", "echo"), ("command", "a\"; rm -rf /")]);
        let shell =
            TaskSpec::Run { command: CommandSpec::Shell("echo \"${X}\" $${i} ${DROVER_AGENT}".into()), timeout: None };
        let got = substitute_task(&shell, |_| Some("a\"; rm -rf /".into())).unwrap();
        assert_eq!(fields(&got), vec![("command", "echo \"${X}\" ${i} ${DROVER_AGENT}")]);
        assert_eq!(substitute_task(&shell, |_| None).unwrap_err(), "command: unknown variable ${X}");
    }

    #[test]
    fn base64_forms_cover_every_alignment() {
        // The secret at each offset of a longer text, encoded by an independent encoder.
        let secret = "s3cr3t-Pa55";
        let m = Masker::new([secret]);
        for prefix in ["", "x", "xy", "xyz"] {
            let text = format!("{prefix}{secret} and more");
            let encoded = reference_base64(text.as_bytes());
            let masked = m.mask(&encoded);
            assert!(masked.contains(MASK), "{prefix:?}: {encoded} -> {masked}");
            // What is left cannot be decoded back to the secret.
            assert!(!masked.contains(&base64_at(secret.as_bytes(), 0)[..8]), "{masked}");
        }
    }

    /// An independent base64 (RFC 4648 table and padding), for the test.
    fn reference_base64(data: &[u8]) -> String {
        let mut out = String::new();
        for c in data.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let idx = [b[0] >> 2, (b[0] & 3) << 4 | b[1] >> 4, (b[1] & 15) << 2 | b[2] >> 6, b[2] & 63];
            for (i, x) in idx.iter().enumerate() {
                if i <= c.len() {
                    out.push(B64[*x as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn masking_plain_encoded_and_multi_line_secrets() {
        assert_eq!(reference_base64(b"hello"), "aGVsbG8=");
        let m = Masker::new(["p@ss word/1", "-----BEGIN KEY-----\nAAAABBBBCCCC\nDDDD\n-----END KEY-----", "ab"]);
        let cases: &[(&str, &str)] = &[
            ("password is p@ss word/1.", "password is ***."),
            ("url: https://x/?p=p%40ss%20word%2F1&q", "url: https://x/?p=***&q"),
            ("form: p%40ss+word%2f1", "form: ***"),
            ("line AAAABBBBCCCC end", "line *** end"),
            ("DDDD", "***"),
            ("ab is too short to mask: ab", "ab is too short to mask: ab"),
            ("nothing here", "nothing here"),
        ];
        for (line, want) in cases {
            assert_eq!(m.mask(line), *want, "{line}");
        }
        let encoded = reference_base64(b"p@ss word/1");
        assert!(!m.mask(&encoded).contains(&encoded[..12]), "{}", m.mask(&encoded));
        assert!(matches!(Masker::default().mask("x"), Cow::Borrowed(_)));
        assert!(Masker::new(["ab"]).is_empty(), "too short: nothing to mask");
        // Blank lines of a secret are not forms: indentation stays.
        let m = Masker::new(["first-line\n        \nsecond-line"]);
        assert_eq!(m.mask("        indented"), "        indented");
        assert_eq!(m.mask("  second-line  "), "  ***  ");
        assert!(!format!("{m:?}").contains("first"), "{m:?}");
    }

    /// What Python's `urllib.parse` writes (printed by Python 3.11 for this secret): `quote`
    /// keeps `/`, `quote_plus` writes spaces as `+`, `safe=''` encodes everything, lower-case
    /// hex, and a `safe` set of the caller's own. Each is masked whole, with what is around it
    /// left alone.
    #[test]
    fn percent_encoding_with_any_characters_left_as_they_are_is_masked() {
        let m = Masker::new(["Qa/S3cret+Pw:99 x&y=é"]);
        for form in [
            "Qa/S3cret%2BPw%3A99%20x%26y%3D%C3%A9",
            "Qa%2FS3cret%2BPw%3A99+x%26y%3D%C3%A9",
            "Qa%2FS3cret%2BPw%3A99%20x%26y%3D%C3%A9",
            "Qa%2fS3cret%2bPw%3a99%20x%26y%3d%c3%a9",
            "Qa/S3cret+Pw:99%20x%26y%3D%C3%A9",
            "Qa%2FS3cret+Pw:99%20x&y=%c3%A9",
        ] {
            assert_eq!(
                m.mask(&format!("GET /login?pw={form}&next=%2Fhome")),
                "GET /login?pw=***&next=%2Fhome",
                "{form}"
            );
        }
        // The example: Python's default quote() of a secret without spaces.
        let m = Masker::new(["Qa/S3cret+Pw:99"]);
        assert_eq!(m.mask("p=Qa/S3cret%2BPw%3A99;"), "p=***;");
        assert_eq!(m.mask("Qa%2FS3cret%2BPw%3A99 and Qa/S3cret+Pw:99"), "*** and ***");
        // Decoding finds nothing: the line is left as it is, borrowed.
        assert!(matches!(m.mask("100% sure, 50%2 off, %zz"), Cow::Borrowed(_)));
        // A match that starts inside a multi-byte character is widened to whole characters.
        let m = Masker::new(["é-secret"]);
        assert_eq!(m.mask("x%C3%A9-secret y"), "x*** y");
    }

    #[test]
    fn wrapped_base64_is_masked_line_by_line() {
        let secret: String = (0..120).map(|i| char::from(b'!' + (i * 7 % 90) as u8)).collect();
        let m = Masker::new([secret.as_str()]);
        let encoded = reference_base64(secret.as_bytes());
        for width in [64, 76] {
            let lines: Vec<&str> = encoded.as_bytes().chunks(width).map(|c| std::str::from_utf8(c).unwrap()).collect();
            assert!(lines.len() >= 3, "{width}");
            for l in &lines[..lines.len() - 1] {
                assert_eq!(m.mask(l), MASK, "width {width}: {l}");
            }
        }
    }

    #[test]
    fn secrets_too_short_to_mask_are_refused() {
        for ok in ["abcd", "  abcd  ", "-----BEGIN-----\nAAAA\n\n-----END-----\n"] {
            validate_secret("S", ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in ["abc", "abc\n", "    ", "long-enough\nab\nlong-enough"] {
            assert!(validate_secret("S", bad).unwrap_err().contains("at least 4"), "{bad:?}");
        }
    }
}
