//! The portal's own style sheet and script, compiled into the binary and served under names
//! that carry a hash of their content (`portal.3f2a….css`), so a browser caches each for a
//! year and a new build is fetched at once.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const CSS: &str = include_str!("../../assets/portal.css");
const JS: &str = include_str!("../../assets/portal.js");

struct Asset {
    name: String,
    url: String,
    body: &'static str,
    content_type: &'static str,
}

fn asset(stem: &str, ext: &str, body: &'static str, content_type: &'static str) -> Asset {
    let hash = hex::encode(&Sha256::digest(body.as_bytes())[..6]);
    let name = format!("{stem}.{hash}.{ext}");
    Asset { url: format!("/portal/assets/{name}"), name, body, content_type }
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        asset("portal", "css", CSS, "text/css; charset=utf-8"),
        asset("portal", "js", JS, "text/javascript; charset=utf-8"),
    ]
});

/// The style sheet's URL.
pub fn css() -> &'static str {
    &ASSETS[0].url
}

/// The script's URL.
pub fn js() -> &'static str {
    &ASSETS[1].url
}

pub async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => (
            [(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
