//! The grants of the token endpoint, one file each: a grant is a function from the parsed
//! request (the authenticated client and the form) to `Result<TokenSet, OAuthError>`; the
//! endpoint (`endpoints::token`) only dispatches on `grant_type`.

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
pub mod refresh_token;

use super::error::OAuthError;

/// The requested scope (space-separated roles) within what is allowed; `None` asks for all.
pub(crate) fn scope_within(asked: Option<&str>, allowed: &[String]) -> Result<Vec<String>, OAuthError> {
    match asked.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(allowed.to_vec()),
        Some(scope) => {
            let asked: Vec<String> = scope.split(' ').filter(|x| !x.is_empty()).map(String::from).collect();
            match asked.iter().find(|r| !allowed.contains(r)) {
                Some(bad) => Err(OAuthError::bad("invalid_scope", format!("{bad} is not granted"))),
                None => Ok(asked),
            }
        }
    }
}
