//! The public error codes of `/api/v1` and `/agent/v1`: one table of code, HTTP status, CLI
//! exit code and meaning. The server builds every error response from it, the client reads a
//! response's code back into it, the CLI picks its exit code from it, and docs/api.md carries
//! the same table (a test compares them).

use std::fmt;

macro_rules! error_codes {
    ($($variant:ident => $code:literal, $status:literal, $exit:literal, $meaning:literal;)+) => {
        /// A stable, documented error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),+ }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $(ErrorCode::$variant => $code),+ } }
            /// The HTTP status every response with this code has.
            pub fn http_status(self) -> u16 { match self { $(ErrorCode::$variant => $status),+ } }
            /// The `drover` CLI's exit code for it.
            pub fn exit_code(self) -> u8 { match self { $(ErrorCode::$variant => $exit),+ } }
            /// When it is answered (docs/api.md, "Errors").
            pub fn meaning(self) -> &'static str { match self { $(ErrorCode::$variant => $meaning),+ } }
            pub fn parse(code: &str) -> Option<ErrorCode> { match code { $($code => Some(ErrorCode::$variant),)+ _ => None } }
        }
    };
}

error_codes! {
    InvalidRequest => "invalid_request", 400, 7, "malformed body, bad id, a missing or wrong field, checksum mismatch";
    InvalidSpec => "invalid_spec", 422, 7, "an invalid pipeline, name or version; the message names the field (and line, for YAML)";
    Unauthorized => "unauthorized", 401, 3, "no or wrong credentials (with `WWW-Authenticate`)";
    InvalidToken => "invalid_token", 401, 3, "the access token is invalid, expired or revoked (`WWW-Authenticate: Bearer error=\"invalid_token\"`)";
    Forbidden => "forbidden", 403, 4, "the caller lacks the privilege (on this application), the approval role, or the grant ceiling forbids it";
    NotFound => "not_found", 404, 5, "no such resource or route, or one in an application the caller cannot read";
    TooLarge => "too_large", 413, 7, "the body or artifact is larger than its limit (`[http.limits] max_body_bytes`, `[artifacts] max_size`)";
    QuotaExceeded => "quota_exceeded", 413, 6, "the application's artifacts would exceed `[artifacts] quota`; delete versions or raise it";
    Conflict => "conflict", 409, 6, "exists already, is in use, or changed meanwhile";
    InvalidState => "invalid_state", 409, 6, "the action does not apply to the deployment's or task's status";
    Internal => "internal", 500, 1, "a server fault; details are in the orchestrator log, not in the response";
    Unavailable => "unavailable", 503, 9, "the orchestrator cannot reach its database; keep your credentials and retry after `Retry-After` seconds";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
            assert!((400..600).contains(&c.http_status()));
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    /// docs/api.md's table is this one.
    #[test]
    fn the_documented_table_is_the_code() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
        let section = doc.split("## Errors").nth(1).unwrap().split("\n## ").next().unwrap();
        let mut rows = Vec::new();
        for line in section.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() >= 5
                && let Ok(status) = cells[1].parse::<u16>()
            {
                let code = cells[2].trim_matches('`');
                let exit: u8 = cells[3].parse().expect("exit code");
                rows.push((status, code.to_string(), exit));
            }
        }
        let code: Vec<_> =
            ErrorCode::ALL.iter().map(|c| (c.http_status(), c.as_str().to_string(), c.exit_code())).collect();
        assert_eq!(rows, code, "docs/api.md lists every code with its status and exit code, in order");
    }
}
