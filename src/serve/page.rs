//! The admin page at `/`: one HTML file, its script, its style sheet and
//! its icon, compiled into the binary (no build step, nothing fetched from
//! elsewhere). The page reads and runs through the same API as any client,
//! with the token the operator types in (kept in sessionStorage, sent as
//! the Bearer header; no cookies).

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("page/index.html");

/// The files under `/assets/`, with their content types.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("page/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("page/app.css"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("page/icon.svg")),
];

/// Every answer's policy: scripts, styles and images from this server
/// alone (no inline script or style), requests to this server alone, never
/// inside a frame, no forms sent elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The headers every answer carries, the API's as well as the page's.
pub(super) fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Asked again each time: a new binary's page is never mixed with an
    // old one's script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`.
pub(super) async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/<file>`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => file(content_type, body),
        None => super::api::not_found_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page keeps to its own policy: no inline script or style, no
    /// handler attributes, nothing from another origin.
    #[test]
    fn the_page_needs_nothing_the_policy_forbids() {
        for (name, text) in std::iter::once(("index.html", INDEX))
            .chain(ASSETS.iter().map(|(name, _, body)| (*name, *body)))
        {
            for forbidden in [
                "src=\"http",
                "href=\"http",
                "url(",
                "@import",
                "style=\"",
                " onclick",
                " onload",
                "eval(",
                "innerHTML",
            ] {
                assert!(!text.contains(forbidden), "{name} contains `{forbidden}`");
            }
        }
        // Every script the page loads is a file of its own.
        for (at, _) in INDEX.match_indices("<script") {
            let tag = &INDEX[at..INDEX[at..].find('>').map_or(INDEX.len(), |end| at + end)];
            assert!(tag.contains("src=\"/assets/"), "inline script: {tag}");
        }
        assert!(!INDEX.contains("<style"), "inline style sheet");
    }
}
