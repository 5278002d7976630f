//! The web UI: static files embedded in the binary at build time, served by the same process
//! as the API. The UI is a single page (plain JavaScript modules and CSS, no build step) that
//! talks only to `/api/v1`.
//!
//! Every response carries a strict Content-Security-Policy: scripts and styles only from the
//! portal itself (no inline code), media and API calls to the same origin, no framing.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy sent with every UI file.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; \
     font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its URL path, media type and contents.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/app.js"),
    },
    Asset {
        path: "/ui/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/api.js"),
    },
    Asset {
        path: "/ui/player.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/player.js"),
    },
    Asset {
        path: "/ui/dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/dom.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../ui/app.css"),
    },
];

fn respond(asset: &'static Asset) -> Response {
    // nosniff, X-Frame-Options and Referrer-Policy come from the edge, as on every response.
    let headers: [(HeaderName, HeaderValue); 3] = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        // Revalidate on every load so an upgrade's UI is never mixed with a cached old one.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (StatusCode::OK, headers, asset.body).into_response()
}

/// Routes for the UI's files; merged beside the API by [`crate::Portal::new`].
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |r, asset| {
        r.route(asset.path, get(move || async move { respond(asset) }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_inline_scripts_or_styles_in_the_page() {
        let page = ASSETS[0].body;
        assert!(!page.contains("<script>"), "inline script in index.html");
        assert!(!page.contains("style="), "inline style in index.html");
        assert!(
            !page.contains("<style"),
            "inline style element in index.html"
        );
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for line in asset.body.lines().filter(|l| l.starts_with("import ")) {
                let Some(from) = line.split('\'').nth(1) else {
                    continue;
                };
                let path = format!("/ui/{}", from.trim_start_matches("./"));
                assert!(
                    ASSETS.iter().any(|a| a.path == path),
                    "{} imports {from}, which is not embedded",
                    asset.path
                );
            }
        }
    }
}
